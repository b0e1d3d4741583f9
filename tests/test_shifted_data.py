"""Tests for the built-in shifted pairs: the MNIST-M-style blend, fashion-mnist-m and the skada tabular pairs."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.data import builtin as builtin_mod
from transferkit.data import list_datasets, load_builtin
from transferkit.data.shifted import PHOTO_FILES, SHIFTED_PAIRS, bundled_photos, make_mnist_m, make_skada_pair
from transferkit.errors import DataError

SKADA_SHIFTS = ("covariate", "label", "conditional", "subspace")


def _digits(n: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 8:20, 12:16] = rng.integers(150, 256, size=(n, 1, 1), dtype=np.uint8)  # a bright bar per image
    return x


def _photos(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(40 + 7 * i, 50 + 3 * i, 3), dtype=np.uint8) for i in range(3)]


# ---------------------------------------------------------------------------------------------------------------
# make_mnist_m
# ---------------------------------------------------------------------------------------------------------------


def test_make_mnist_m_is_the_absolute_difference_with_a_crop() -> None:
    digits = _digits(20)
    photo = np.zeros((30, 30, 3), dtype=np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 200, 90, 10  # one flat colour: every crop is the same
    out = make_mnist_m(digits, seed=3, photos=[photo])
    expected = np.abs(photo[:28, :28].astype(int)[None] - digits.astype(int)[..., None])
    assert out.shape == (20, 28, 28, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_make_mnist_m_crops_come_from_the_photos_at_valid_offsets() -> None:
    blank = np.zeros((12, 28, 28), dtype=np.uint8)  # no digit: the output is the crop itself
    photos = _photos()
    out = make_mnist_m(blank, seed=1, photos=photos)
    for img in out:
        found = False
        for p in photos:
            windows = np.lib.stride_tricks.sliding_window_view(p, (28, 28), axis=(0, 1))
            if (windows.transpose(0, 1, 3, 4, 2) == img).all(axis=(2, 3, 4)).any():
                found = True
                break
        assert found


def test_make_mnist_m_is_deterministic_from_the_seed() -> None:
    digits, photos = _digits(), _photos()
    a = make_mnist_m(digits, seed=0, photos=photos)
    b = make_mnist_m(digits, seed=0, photos=photos)
    c = make_mnist_m(digits, seed=1, photos=photos)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5


def test_make_mnist_m_uses_the_bundled_photographs_by_default() -> None:
    photos = bundled_photos()
    assert len(photos) == len(PHOTO_FILES) >= 8
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 and min(p.shape[:2]) >= 256 for p in photos)
    digits = _digits(200)
    out = make_mnist_m(digits, seed=0)
    np.testing.assert_array_equal(out, make_mnist_m(digits, seed=0, photos=list(photos)))
    assert not np.array_equal(out, make_mnist_m(digits, seed=5))


@pytest.mark.parametrize(
    "images, photos, match",
    [
        (np.zeros((3, 28, 28), dtype=np.float32), None, "uint8 array of shape"),
        (np.zeros((3, 28, 28, 3), dtype=np.uint8), None, "uint8 array of shape"),
        (np.zeros((3, 28, 28), dtype=np.uint8), [np.zeros((20, 40, 3), dtype=np.uint8)], "at least 28x28"),
        (np.zeros((3, 28, 28), dtype=np.uint8), [np.zeros((40, 40), dtype=np.uint8)], "RGB array"),
        (np.zeros((3, 28, 28), dtype=np.uint8), [], "at least one photograph"),
    ],
)
def test_make_mnist_m_bad_input_is_one_sentence(images: np.ndarray, photos: list | None, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        make_mnist_m(images, seed=0, photos=photos)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


# ---------------------------------------------------------------------------------------------------------------
# Built-in image targets
# ---------------------------------------------------------------------------------------------------------------


def _channel_means(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1, 3).mean(axis=(0, 1)) if x.ndim == 4 else np.full(3, x.mean())


def test_mnist_m_has_mnists_labels_and_splits_but_other_pixels() -> None:
    src, tgt = load_builtin("mnist"), load_builtin("mnist-m")
    for (name_s, s), (name_t, t) in zip(src.items(), tgt.items()):
        assert name_s == name_t
        assert t.inputs.shape == (*s.inputs.shape, 3) and t.inputs.dtype == np.uint8
        np.testing.assert_array_equal(t.labels, s.labels)
        assert t.classes == s.classes and t.name == "mnist-m" and t.modality == "image"
    assert [len(d) for _, d in tgt.items()] == [3500, 500, 1000]
    # example i of mnist-m is example i of mnist blended with seed 0
    full = make_mnist_m(builtin_mod._mnist_arrays()[0], seed=0)
    for idx, (_, split) in zip(builtin_mod._split_indices("mnist", (0.7, 0.1, 0.2)), tgt.items()):
        np.testing.assert_array_equal(split.inputs, full[idx])
    # the shift is real: grey digits on black (mean ~33, equal channels) become coloured and much brighter
    ms, mt = _channel_means(src.train.inputs), _channel_means(tgt.train.inputs)
    assert mt.min() > ms.max() + 30
    assert mt.max() - mt.min() > 10  # no longer grey
    # pixel-level: the per-image mean brightness distributions hardly overlap
    b_src = src.test.inputs.reshape(1000, -1).mean(1)
    b_tgt = tgt.test.inputs.reshape(1000, -1).mean(1)
    assert np.mean(b_tgt > np.median(b_src)) > 0.9


def test_mnist_m_load_is_cached_and_returns_fresh_copies() -> None:
    a = load_builtin("mnist-m")
    a.train.inputs[0] = 0  # callers may modify what they get
    b = load_builtin("mnist-m")
    assert b.train.inputs[0].any()
    assert builtin_mod._mnist_m_arrays() is builtin_mod._mnist_m_arrays()


@pytest.mark.skipif(not builtin_mod.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_m_is_a_shifted_copy_of_fashion_mnist() -> None:
    src, tgt = load_builtin("fashion-mnist"), load_builtin("fashion-mnist-m")
    assert [len(d) for _, d in tgt.items()] == [55000, 5000, 10000]
    for (_, s), (_, t) in zip(src.items(), tgt.items()):
        assert t.inputs.shape == (*s.inputs.shape, 3) and t.inputs.dtype == np.uint8
        np.testing.assert_array_equal(t.labels, s.labels)
    ms, mt = _channel_means(src.test.inputs), _channel_means(tgt.test.inputs)
    assert abs(mt.mean() - ms.mean()) > 20 and mt.max() - mt.min() > 10


# ---------------------------------------------------------------------------------------------------------------
# skada tabular pairs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", SKADA_SHIFTS)
def test_skada_pairs_are_small_stratified_float32_and_fixed(shift: str) -> None:
    for side in ("source", "target"):
        s = load_builtin(f"skada-{shift}-{side}")
        assert s.modality == "tabular" and s.classes == ["0", "1"]
        assert [len(d) for _, d in s.items()] == [720, 240, 240]
        for _, d in s.items():
            assert d.inputs.dtype == np.float32 and d.inputs.shape[1] == 2 and np.isfinite(d.inputs).all()
            assert set(np.unique(d.labels)) == {0, 1}
        share = [d.labels.mean() for _, d in s.items()]
        assert max(share) - min(share) < 0.02  # stratified
        again = load_builtin(f"skada-{shift}-{side}")
        np.testing.assert_array_equal(again.test.inputs, s.test.inputs)


def test_skada_pairs_have_shifted_marginals() -> None:
    for shift in SKADA_SHIFTS:
        xs, ys, xt, yt = make_skada_pair(shift)
        mean_gap = np.abs(xs.mean(0) - xt.mean(0)).max()
        assert mean_gap > 0.3, shift  # p(x) differs in every pair
    _, ys, _, yt = make_skada_pair("label")
    assert abs(ys.mean() - 0.5) < 0.05 and yt.mean() < 0.2  # label shift: the class prior moves


def test_skada_covariate_shift_hurts_a_source_model_on_the_target() -> None:
    from sklearn.linear_model import LogisticRegression

    s, t = load_builtin("skada-covariate-source"), load_builtin("skada-covariate-target")
    clf = LogisticRegression().fit(s.train.inputs, s.train.labels)
    oracle = LogisticRegression().fit(t.train.inputs, t.train.labels)
    on_target = clf.score(t.test.inputs, t.test.labels)
    assert clf.score(s.test.inputs, s.test.labels) > on_target + 0.05
    assert oracle.score(t.test.inputs, t.test.labels) > on_target + 0.05


def test_unknown_skada_shift_is_a_data_error() -> None:
    with pytest.raises(DataError, match="Unknown skada shift 'prior'"):
        make_skada_pair("prior")


# ---------------------------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------------------------


def test_shifted_pairs_are_listed_built_ins_with_equal_label_sets() -> None:
    names = list_datasets()
    for pair, (source, target) in SHIFTED_PAIRS.items():
        assert source in names and target in names, pair
        b = builtin_mod.BUILTINS
        assert b[source].classes == b[target].classes and b[source].modality == b[target].modality
    assert {"mnist->mnist-m", "fashion-mnist->fashion-mnist-m", "skada-covariate"} <= set(SHIFTED_PAIRS)
    for name in ("mnist-m", "fashion-mnist-m", "skada-covariate-source", "skada-subspace-target"):
        assert name in names and names[name].endswith(".")


def test_uci_digits_are_the_same_ten_digits_by_other_writers_drawn_like_mnist() -> None:
    src, tgt = load_builtin("mnist"), load_builtin("uci-digits")
    assert [len(d) for _, d in tgt.items()] == [1258, 180, 359]
    assert tgt.classes == src.classes and tgt.train.inputs.shape[1:] == (28, 28) and tgt.train.inputs.dtype == np.uint8
    counts = tgt.train.class_counts()
    assert counts.min() >= 120 and counts.max() <= 130  # stratified over the ten digits
    # drawn the MNIST way: ink inside the central 20x20 box, black border, bright strokes
    x = tgt.train.inputs
    assert x[:, :4].max() == 0 and x[:, 24:].max() == 0 and x[:, :, :4].max() == 0 and x[:, :, 24:].max() == 0
    assert x.reshape(len(x), -1).max(1).min() > 150
    assert not {a.tobytes() for a in tgt.train.inputs} & {a.tobytes() for a in tgt.test.inputs}
    assert "mnist->uci-digits" in SHIFTED_PAIRS
