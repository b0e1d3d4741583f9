"""The proxy A-distance, the 2-D embedding, the embedding plot and the validator-vs-oracle bookkeeping of compare."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.adaptation.divergence import a_distance, embed_2d
from transferkit.app.compare import summarise, summary_markdown, validator_choices


def _gauss(n: int, shift: float, seed: int, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, 0] += shift
    return x


def test_a_distance_is_near_zero_for_one_distribution_and_near_two_for_separated_ones():
    same = a_distance(_gauss(400, 0.0, 0), _gauss(400, 0.0, 1))
    far = a_distance(_gauss(400, 0.0, 0), _gauss(400, 8.0, 1))
    mid = a_distance(_gauss(400, 0.0, 0), _gauss(400, 1.0, 1))
    assert same < 0.3
    assert far > 1.9
    assert same < mid < far  # grows with the shift


def test_a_distance_refuses_too_few_examples():
    with pytest.raises(ValueError, match="at least 4"):
        a_distance(np.zeros((2, 3)), np.zeros((5, 3)))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_keeps_the_separation_of_the_domains(method):
    zs, zt = embed_2d(_gauss(60, 0.0, 0), _gauss(60, 10.0, 1), method=method)
    assert zs.shape == zt.shape == (60, 2)
    direction = (zt.mean(0) - zs.mean(0)) / np.linalg.norm(zt.mean(0) - zs.mean(0))
    ps, pt = zs @ direction, zt @ direction
    assert pt.mean() - ps.mean() > 2 * max(ps.std(), pt.std())


def test_embedding_png_is_written(tmp_path):
    from transferkit.evaluate.plots import embedding_png

    zs, zt = embed_2d(_gauss(30, 0.0, 0), _gauss(30, 3.0, 1), method="pca")
    path = tmp_path / "emb.png"
    embedding_png([{"title": "a", "source": zs, "target": zt},
                   {"title": "b", "source": zs, "target": zt, "source_labels": np.arange(30) % 3,
                    "target_labels": np.arange(30) % 3}], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validator_choices_compare_the_pick_with_the_oracle():
    history = [
        {"target_accuracy": 0.5, "snd": 1.0, "iw_val_loss": 0.9, "val_accuracy": 0.9},
        {"target_accuracy": 0.7, "snd": 3.0, "iw_val_loss": 0.5, "val_accuracy": 0.95},
        {"target_accuracy": 0.6, "snd": 2.0, "iw_val_loss": 0.4, "val_accuracy": 0.99},
    ]
    got = validator_choices(history)
    assert got["snd"]["epoch"] == 2 and got["snd"]["gap"] == 0.0
    assert got["iw_val_loss"]["epoch"] == 3 and got["iw_val_loss"]["gap"] == pytest.approx(0.1)
    assert got["val_accuracy"]["oracle_epoch"] == 2
    assert validator_choices([{"snd": 1.0}]) == {}  # no oracle curve, nothing to compare


def test_summary_pairs_each_method_with_source_only_per_seed():
    runs = [
        {"method": "source-only", "seed": 0, "target_accuracy": 0.5, "a_distance": 1.8, "seconds": 1.0},
        {"method": "source-only", "seed": 1, "target_accuracy": 0.6, "a_distance": 1.7, "seconds": 1.0},
        {"method": "dann", "seed": 0, "target_accuracy": 0.7, "a_distance": 1.0, "seconds": 2.0},
        {"method": "dann", "seed": 1, "target_accuracy": 0.7, "a_distance": 1.1, "seconds": 2.0},
    ]
    s = {r["method"]: r for r in summarise(runs)}
    assert s["dann"]["gain_vs_source_only_mean"] == pytest.approx(0.15)
    assert s["dann"]["target_accuracy_mean"] == pytest.approx(0.7)
    assert "gain_vs_source_only_mean" not in s["source-only"]
    md = summary_markdown(list(s.values()), "val_accuracy")
    assert "| dann | 2 | 70.0 ± 0.0 | +15.0 ± 7.1 |" in md
