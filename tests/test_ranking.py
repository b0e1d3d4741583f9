"""Transferability scores (LogME, LEEP, H-score, k-NN) and backbone ranking.

The score tests are pure numpy and run in milliseconds: each compares a score with an independent computation
(a direct optimisation of the evidence, a hand-computed LEEP, a direct numpy H-score) or checks that features which
carry the labels beat noise of the same shape. The ranking tests build real backbones and are marked slow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferkit.errors import DataError
from transferkit.ranking import hscore, knn_accuracy, leep, logme


def _task(n: int, d: int, k: int = 4, signal: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, features that carry them (class means on the first k dimensions) and noise of the same shape."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    good = rng.normal(size=(n, d))
    good[:, :k] += signal * np.eye(k)[y]
    noise = rng.normal(size=(n, d))
    return y, good, noise


# --- LogME -------------------------------------------------------------------------------------------------------


def _evidence_by_optimisation(f: np.ndarray, y: np.ndarray) -> float:
    """Mean per-sample log evidence, maximised over (alpha, beta) directly on y ~ N(0, F F^T / alpha + I / beta)."""
    from scipy.optimize import minimize
    from scipy.stats import multivariate_normal

    n = len(f)
    out = []
    for c in np.unique(y):
        t = (y == c).astype(float)

        def nll(p: np.ndarray, t: np.ndarray = t) -> float:
            a, b = np.exp(p)
            return -multivariate_normal(np.zeros(n), f @ f.T / a + np.eye(n) / b).logpdf(t)

        res = minimize(nll, [0.0, 0.0], method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-10})
        out.append(-res.fun / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n,d", [(60, 12), (20, 45)])
def test_logme_equals_the_maximised_evidence(n: int, d: int) -> None:
    """The fixed-point iteration on the SVD reaches the maximum marginal likelihood, for N > D and for N < D."""
    y, good, _ = _task(n, d, k=3, signal=1.0)
    assert logme(good, y) == pytest.approx(_evidence_by_optimisation(good, y), abs=2e-3)


@pytest.mark.parametrize("n,d", [(400, 32), (60, 300)])
def test_logme_prefers_features_that_carry_the_labels(n: int, d: int) -> None:
    y, good, noise = _task(n, d)
    a, b = logme(good, y), logme(noise, y)
    assert math.isfinite(a) and math.isfinite(b)
    assert a > b + 0.01, (a, b)


def test_logme_is_per_sample() -> None:
    """Same distribution, 10x the samples: the per-sample evidence moves by under 10% (the sum would grow 10x)."""
    y_small, f_small, _ = _task(1000, 16, seed=1)
    y_big, f_big, _ = _task(10000, 16, seed=2)
    a, b = logme(f_small, y_small), logme(f_big, y_big)
    assert abs(a - b) < 0.1 * abs(b), (a, b)


def test_logme_ignores_label_names() -> None:
    y, good, _ = _task(200, 10)
    assert logme(good, y) == pytest.approx(logme(good, np.array(["abcd"[i] for i in y])))
    assert logme(good, y) == pytest.approx(logme(good, y + 7))


# --- LEEP --------------------------------------------------------------------------------------------------------


def test_leep_matches_the_hand_computed_value() -> None:
    theta = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 1, 0])
    # P(y, z) = 1/3 * [[0.9 + 0.6, 0.1 + 0.4], [0.2, 0.8]]; P(z) = 1/3 * [1.7, 1.3]
    p_y_given_z = np.array([[1.5 / 1.7, 0.5 / 1.3], [0.2 / 1.7, 0.8 / 1.3]])
    expected = np.mean([math.log(theta[i] @ p_y_given_z[y[i]]) for i in range(3)])
    assert leep(theta, y) == pytest.approx(expected, rel=1e-12)


def test_leep_is_higher_when_source_classes_align_with_the_target() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    aligned = np.full((300, 6), 0.02)
    aligned[np.arange(300), 2 * y] = 0.9  # source class 2y is confidently predicted for target class y
    aligned /= aligned.sum(axis=1, keepdims=True)
    unrelated = rng.dirichlet(np.ones(6), size=300)
    assert leep(aligned, y) > leep(unrelated, y) + 0.5
    assert leep(aligned, y) <= 0.0


def test_leep_refuses_logits() -> None:
    with pytest.raises(DataError, match="softmax"):
        leep(np.random.default_rng(0).normal(size=(10, 4)), np.arange(10) % 2)


# --- H-score -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(200, 8), (30, 50)])
def test_hscore_without_shrinkage_matches_numpy(n: int, d: int) -> None:
    y, f, _ = _task(n, d)
    g = np.stack([f[y == c].mean(axis=0) for c in y])  # E[f | y] for each sample
    direct = np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False))
    assert hscore(f, y, shrinkage=False) == pytest.approx(direct, rel=1e-8)


@pytest.mark.parametrize("n,d", [(80, 40), (40, 120)])
def test_regularised_hscore_matches_ledoit_wolf_formula(n: int, d: int) -> None:
    """Against scikit-learn's LedoitWolf and a plain pseudo-inverse, for D < N and (Woodbury path) D > N."""
    from sklearn.covariance import LedoitWolf

    y, f, _ = _task(n, d)
    fc = f - f.mean(axis=0)
    lw = LedoitWolf().fit(fc)
    g = np.stack([fc[y == c].mean(axis=0) for c in y])
    direct = np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * np.cov(g, rowvar=False)))
    assert hscore(f, y) == pytest.approx(direct, rel=1e-6)


@pytest.mark.parametrize("n,d,signal", [(400, 32, 2.0), (60, 300, 4.0)])
def test_hscore_prefers_features_that_carry_the_labels(n: int, d: int, signal: float) -> None:
    y, good, noise = _task(n, d, signal=signal)
    a, b = hscore(good, y), hscore(noise, y)
    assert math.isfinite(a) and math.isfinite(b)
    assert a > 2 * b, (a, b)


# --- k-NN --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(400, 32), (60, 300)])
def test_knn_prefers_features_that_carry_the_labels(n: int, d: int) -> None:
    y, good, noise = _task(n, d, signal=6.0)
    assert knn_accuracy(good, y, k=5) > 0.8
    assert knn_accuracy(noise, y, k=5) < 0.5


def test_knn_leave_one_out_never_uses_the_sample_itself() -> None:
    """Two far-apart points per class, each with a twin of the *other* class: LOO with k=1 gets everything wrong."""
    f = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    y = np.array([0, 1, 0, 1])
    assert knn_accuracy(f, y, k=1) == 0.0
    # with held-out data the same points are classified by their (correct) twins
    assert knn_accuracy(f[[0, 3]], y[[0, 3]], f[[1, 2]], np.array([0, 1]), k=1) == 1.0


def test_knn_uses_cosine_neighbours() -> None:
    """Scaling one sample does not change its neighbours (features are L2-normalised)."""
    y, f, _ = _task(100, 6, signal=4.0)
    scaled = f * np.random.default_rng(1).uniform(0.01, 100, size=(100, 1))
    assert knn_accuracy(scaled, y, k=5) == knn_accuracy(f, y, k=5)


# --- degenerate input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy])
def test_one_class_is_refused(score) -> None:  # noqa: ANN001
    with pytest.raises(DataError, match="at least two classes"):
        score(np.random.default_rng(0).normal(size=(20, 4)), np.zeros(20))


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, leep])
def test_nan_features_are_refused(score) -> None:  # noqa: ANN001
    f = np.full((20, 4), 0.25)
    f[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        score(f, np.arange(20) % 2)


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy])
def test_mismatched_lengths_are_refused(score) -> None:  # noqa: ANN001
    with pytest.raises(DataError, match="one label per row"):
        score(np.zeros((20, 4)) + 1.0, np.arange(19) % 2)


# --- candidate names and the result object -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,name,layers,pretrained",
    [
        ("mobilenet_v2.imagenet", "mobilenet_v2.imagenet", None, True),
        ("mobilenet_v2.imagenet@4", "mobilenet_v2.imagenet", (4,), True),
        ("mobilenet_v2.imagenet@-2+6", "mobilenet_v2.imagenet", (-2, 6), True),
        ("timm:resnet18~random", "timm:resnet18", None, False),
        ("timm:resnet18~random@2", "timm:resnet18", (2,), False),
        ("tv:resnet18@2~random", "tv:resnet18", (2,), False),
        (" minilm-l6 ", "minilm-l6", None, True),
        ("mobilenet_v2.imagenet@features.7", "mobilenet_v2.imagenet", ("features.7",), True),  # module paths
        ("timm:resnet18~random@layer3.1+-1", "timm:resnet18", ("layer3.1", -1), False),
    ],
)
def test_parse_candidate(text: str, name: str, layers: tuple[int, ...] | None, pretrained: bool) -> None:
    from transferkit.ranking import parse_candidate

    c = parse_candidate(text)
    assert (c.name, c.layers, c.pretrained) == (name, layers, pretrained)


@pytest.mark.parametrize("text", ["", "mobilenet_v2.imagenet@x-y", "mobilenet_v2.imagenet@features..7",
                                  "mobilenet_v2.imagenet@1+", "@3", "~random"])
def test_parse_candidate_refuses_bad_names(text: str) -> None:
    from transferkit.errors import BackboneError
    from transferkit.ranking import parse_candidate

    with pytest.raises(BackboneError):
        parse_candidate(text)


def test_rank_result_orders_recommends_and_serialises() -> None:
    import json

    from transferkit.ranking import CandidateResult, RankResult

    def row(name: str, lm: float, lp: float) -> CandidateResult:
        return CandidateResult(name, name, None, True, 8, {"logme": lm, "leep": lp}, 1.0, 0.9, 0.1,
                               [] if not math.isnan(lp) else ["LEEP n/a: no head"])

    res = RankResult("toy", 100, 3, ("logme", "leep"), "logme",
                     [row("a", -0.5, -1.0), row("b", 0.3, float("nan")), row("c", -0.1, -0.2)], 3.0)
    assert res.best == "b"
    assert res.order() == ["b", "c", "a"]
    assert res.order("leep") == ["c", "a", "b"]  # NaN last
    lines = res.table().splitlines()
    assert lines[2].split()[:2] == ["1", "b"] and "n/a" in lines[2]
    assert any("LEEP n/a" in line for line in lines)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["best"] == "b" and d["candidates"][1]["scores"]["leep"] is None


# --- command line ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backbones,extra,fragments",
    [
        ("mobilenet_v2.imagnet", [], ["Unknown backbone 'mobilenet_v2.imagnet'", "mobilenet_v2.imagenet"]),
        ("mobilenet_v2.imagenet@1+", [], ["mobilenet_v2.imagenet@1+", "name@L"]),
        ("mobilenet_v2.imagenet@top", [], ["Layer 'top' does not exist", "closest module paths"]),  # a path
        ("mobilenet_v2.imagenet", ["--metrics", "logme,auc"], ["Unknown ranking metric 'auc'"]),
        ("mobilenet_v2.imagenet", ["--max-samples", "5"], ["max_samples=5"]),
    ],
)
def test_cli_rank_user_errors(backbones: str, extra: list[str], fragments: list[str]) -> None:
    from tests.cli_helpers import assert_user_error, run_cli

    proc = run_cli("rank", "--data", "mnist", "--backbones", backbones, *extra, timeout=120)
    assert_user_error(proc, *fragments)


# --- rank_backbones on real backbones ------------------------------------------------------------------------------


def test_rank_backbones_mechanics(blobs_images: tuple[np.ndarray, np.ndarray]) -> None:
    """A tiny random timm network: subsample size, tapped dims, LEEP n/a with a reason, seeded random weights."""
    from transferkit.data import from_arrays
    from transferkit.ranking import rank_backbones

    x, y = blobs_images
    ds = from_arrays(x, y, modality="image", name="blobs")
    cands = ["timm:test_resnet~random", "timm:test_resnet~random@0+1"]
    kw = {"max_samples": 45, "image_size": 32, "engine": "torch", "cache": False}
    res = rank_backbones(ds, cands, **kw)
    assert res.n_samples == 45 and res.num_classes == 3
    first, fused = res.candidates
    assert (first.pretrained, first.layers, fused.layers) == (False, None, [0, 1])
    assert fused.feature_dim != first.feature_dim
    for c in res.candidates:
        assert math.isnan(c.scores["leep"]) and any("LEEP n/a" in n for n in c.notes)
        assert all(math.isfinite(c.scores[m]) for m in ("logme", "hscore", "knn"))
    assert res.best in cands and res.best == res.order()[0]
    again = rank_backbones(ds, cands[:1], metrics=["logme"], **kw)  # same seed: the same random network
    assert again.candidates[0].scores["logme"] == pytest.approx(first.scores["logme"], rel=1e-6)
    other = rank_backbones(ds, cands[:1], metrics=["logme"], seed=1, **kw)
    assert other.candidates[0].scores["logme"] != pytest.approx(first.scores["logme"], rel=1e-6)


@pytest.mark.slow
def test_rank_animal_mnist_prefers_pretrained_features(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Real weights on real data: LogME puts ImageNet MobileNetV2 above the same network with random weights."""
    from transferkit.config import DataConfig
    from transferkit.data import load_data
    from transferkit.ranking import rank_backbones

    monkeypatch.setenv("TRANSFERKIT_CACHE_DIR", str(tmp_path))
    splits = load_data(DataConfig(name="animal-mnist", train_size=400))
    cands = ["mobilenet_v2.imagenet", "mobilenet_v2.imagenet@2", "mobilenet_v2.random"]
    res = rank_backbones(splits, cands, max_samples=300, image_size=64, engine="torch")
    s = {c.candidate: c for c in res.candidates}
    final, mid, rnd = (s[c] for c in cands)
    assert res.n_samples == 300
    assert final.scores["logme"] > rnd.scores["logme"] + 0.05, res.table()
    assert final.scores["knn"] > rnd.scores["knn"], res.table()
    assert res.best != "mobilenet_v2.random"
    assert math.isfinite(final.scores["leep"]) and final.scores["leep"] < 0  # the ImageNet head gives LEEP
    assert math.isnan(mid.scores["leep"]) and math.isnan(rnd.scores["leep"])
    assert final.feature_dim == 1280 and mid.feature_dim < 1280



@pytest.mark.parametrize("n,d", [(200, 30), (40, 300)])
def test_ledoit_wolf_shrinkage_matches_sklearn(n: int, d: int) -> None:
    from sklearn.covariance import ledoit_wolf_shrinkage

    from transferkit.ranking.scores import _ledoit_wolf

    x = np.random.default_rng(3).normal(size=(n, d)) @ np.diag(np.linspace(0.1, 3, d))
    x -= x.mean(axis=0)
    assert _ledoit_wolf(x)[0] == pytest.approx(ledoit_wolf_shrinkage(x, assume_centered=True), rel=1e-9)


def test_shared_pass_gives_each_candidate_its_own_features(blobs_images: tuple[np.ndarray, np.ndarray]) -> None:
    """One forward pass for a network at several depths equals extracting each candidate on its own."""
    from transferkit.backbones import SharedPass
    from transferkit.data import from_arrays
    from transferkit.features import extract_features
    from transferkit.ranking import build_candidate, parse_candidate
    from transferkit.ranking.rank import _columns, _group_source

    x, y = blobs_images
    ds = from_arrays(x[:12], y[:12], modality="image", name="blobs")
    group = [parse_candidate(c) for c in ("timm:test_resnet~random@1", "timm:test_resnet~random",
                                          "timm:test_resnet~random@-1+0")]
    bb = build_candidate(group[0], final=True)
    source, cols = _group_source(bb, group)
    assert isinstance(source, SharedPass) and source.spec()["type"] == "fused"
    kw = {"image_size": 32, "engine": "torch", "cache": False}
    together = extract_features(source, ds, **kw)
    for c in group:
        alone = extract_features(build_candidate(c), ds, **kw)
        np.testing.assert_allclose(_columns(together, cols, c, len(bb.blocks())), alone, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_rank_prints_table_recommendation_and_json(tmp_path) -> None:  # noqa: ANN001
    import json

    from PIL import Image

    from tests.cli_helpers import run_cli

    rng = np.random.default_rng(0)
    for c, shade in (("dark", 40), ("light", 210)):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            img = np.clip(rng.normal(shade, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "imgs" / c / f"{i}.png")
    out = tmp_path / "rank.json"
    proc = run_cli("rank", "--data", str(tmp_path / "imgs"), "--backbones",
                   "timm:test_resnet~random,timm:test_resnet~random@1", "--image-size", "32", "--engine", "torch",
                   "--no-cache", "--metrics", "logme,leep,knn", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "LogME" in proc.stdout and "kNN acc" in proc.stdout and "n/a" in proc.stdout
    d = json.loads(out.read_text())
    assert proc.stdout.strip().splitlines()[-1] == f"recommended: {d['best']} (highest LogME)"
    assert [c["candidate"] for c in d["candidates"]] == ["timm:test_resnet~random", "timm:test_resnet~random@1"]
    assert all(c["scores"]["leep"] is None and c["scores"]["logme"] is not None for c in d["candidates"])
