"""Text tables (CSV, TSV, JSONL, optionally compressed) with a text and a label column, read into :class:`Splits`.

Rows that carry nothing (empty text, a missing label) are dropped with one warning; an unreadable file, a missing
column or too few classes raise :class:`~transferkit.errors.DataError` with one sentence. Free of torch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Dataset, Splits
from .labels import encode_labels, list_rows, missing_labels
from .splits import check_fractions, split_dataset

#: Table suffixes understood by :func:`from_text_table` (after stripping a compression suffix).
TEXT_SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst"}


def table_format(path: str | os.PathLike[str]) -> str | None:
    """``"csv"``, ``"tsv"`` or ``"jsonl"`` from the file name (a ``.gz``/``.bz2``/... suffix is looked through)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return TEXT_SUFFIXES.get(suffixes[-1]) if suffixes else None


def read_table(path: str | os.PathLike[str]) -> Any:
    """Read a CSV/TSV/JSONL file into a pandas DataFrame, with a :class:`DataError` for unreadable files."""
    import pandas as pd

    p = Path(path).expanduser()
    fmt = table_format(p)
    if fmt is None:
        raise DataError(
            f"Cannot tell the format of '{p}'; use a .csv, .tsv or .jsonl file (optionally compressed, e.g. .csv.gz)."
        )
    if p.is_dir():
        raise DataError(f"'{p}' is a folder, not a {fmt.upper()} file; give the file itself.")
    if not p.is_file():
        raise DataError(f"Data file '{p.absolute()}' does not exist; check the path.")
    try:
        if fmt == "jsonl":
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            df = pd.read_csv(p, sep="\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError as e:
        raise DataError(
            f"'{p}' is not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}); save it as UTF-8."
        ) from None
    except PermissionError:
        raise DataError(f"Cannot read '{p}': permission denied; make the file readable.") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"'{p}' is empty; {_TABLE_FORM[fmt]}.") from None
    except (ValueError, TypeError, pd.errors.ParserError, OSError) as e:  # TypeError: a JSONL line not an object
        where = _bad_json_line(p) if fmt == "jsonl" else None
        if where is not None:
            raise DataError(f"Line {where} of '{p}' is not a JSON object; fix or remove that line.") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"Cannot read '{p}' as {fmt.upper()} ({first}); check the file format.") from None
    if df.shape[1] == 0:
        raise DataError(f"'{p}' is empty; {_TABLE_FORM[fmt]}.")
    return df


_TABLE_FORM = {
    "csv": "give a CSV file with a header row, then one row per example",
    "tsv": "give a TSV file with a header row, then one row per example",
    "jsonl": "give a JSONL file with one JSON object per line",
}


def _bad_json_line(p: Path) -> int | None:
    """The 1-based number of the first non-blank line of a JSONL file that is not a JSON object, if one is found."""
    import bz2
    import gzip
    import json
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(p.suffix.lower(), open)
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    ok = isinstance(json.loads(line), dict)
                except ValueError:
                    ok = False
                if not ok:
                    return n
    except (OSError, ValueError):
        return None
    return None


def from_text_table(
    path: str | os.PathLike[str],
    text_column: str = "text",
    label_column: str = "label",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Read a CSV/TSV/JSONL file of labelled texts and split it (seeded, stratified).

    The format comes from the suffix (``.csv``, ``.tsv``/``.tab``, ``.jsonl``/``.ndjson``, optionally compressed).
    Classes are the distinct values of ``label_column``, sorted (numerically when they are numbers); the class names
    are their text. Rows whose text is empty/missing or whose label is missing are dropped with one warning, since a
    few blank rows are common in exported tables and carry no information.

    Raises:
        DataError: unreadable file, a missing column (the message lists the available ones), no rows left, or fewer
            than 2 classes.
    """
    check_fractions(val_fraction, test_fraction)
    p = Path(path).expanduser()
    df = read_table(p)
    cols = [str(c) for c in df.columns]
    for role, col in (("text", text_column), ("label", label_column)):
        if col not in df.columns:
            raise DataError(
                f"Column '{col}' (the {role} column) is not in '{p.name}'; available columns are: {', '.join(cols)} "
                f"(set data.{role}_column){_separator_hint(cols, table_format(p))}."
            )
    text = df[text_column]
    labels = df[label_column]
    text_ok = (text.notna() & (text.astype(str).str.strip() != "")).to_numpy()
    label_ok = ~missing_labels(labels)
    keep = text_ok & label_ok
    dropped = int((~keep).sum())
    if dropped:
        first_line = 1 if table_format(p) == "jsonl" else 2  # the header is line 1 of a CSV/TSV
        msg = (
            f"Dropped {dropped} row(s) of '{p.name}' with empty text ({int((~text_ok).sum())}) or a missing label "
            f"({int((~label_ok).sum())}): {list_rows(np.flatnonzero(~keep), 'line', first_line)}."
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
    if not keep.any():
        raise DataError(f"'{p.name}' has no rows with both text and a label; check the text and label columns.")
    texts = text[keep].astype(str).tolist()
    codes, classes, values = encode_labels(labels[keep].to_numpy(), f"labels in column '{label_column}'")
    if len(classes) < 2:
        raise DataError(
            f"Label column '{label_column}' of '{p.name}' has only {len(classes)} class ({', '.join(classes)}); a "
            "classifier needs at least 2."
        )
    ds = Dataset("text", texts, codes, classes, p.name, {"source": "table", "label_values": values})
    return split_dataset(ds, val_fraction, test_fraction, seed)


def _separator_hint(columns: list[str], fmt: str | None) -> str:
    """A hint when a table read as one column holds another separator in its name (a ';'-separated .csv)."""
    if len(columns) != 1 or fmt == "jsonl":
        return ""
    for sep, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'"), (",", "','")):
        if sep in columns[0]:
            want = "tabs" if fmt == "tsv" else "','"
            return f"; the file seems to separate columns with {label}, but a .{fmt} file must use {want}"
    return ""
