"""Bad data given to transferkit: each mistake is one DataError sentence, or the input is correctly accepted.

Issue 12, data part: channels-first and float image arrays, regression-like and missing labels, link loops in image
folders, '--data' naming a missing file, truncated JPEGs (up front and during training), and unreadable tables.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_helpers import TINY as CLI_TINY
from tests.cli_helpers import assert_user_error, run_cli
from transferkit import TransferClassifier
from transferkit.backbones.base import Preprocessing
from transferkit.config import DataConfig
from transferkit.data import from_arrays, from_image_folder, from_text_table, load_data, make_loader, resolve_data_arg
from transferkit.data.coerce import as_dataset, as_splits, expand_image_paths
from transferkit.errors import DataError, TransferkitError

TINY = dict(backbone="timm:test_resnet", pretrained=False, image_size=32, progress=False, batch_size=16)
IMG_PRE = Preprocessing("image", image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _one_sentence(e: BaseException) -> str:
    """The message of a user error: one line, ending in a full stop (or a question mark)."""
    msg = str(e)
    assert isinstance(e, TransferkitError) and "\n" not in msg and msg.rstrip()[-1] in ".?", msg
    return msg


def _rgb(n: int = 12, h: int = 10, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _jpeg_bytes(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _truncated_jpeg() -> bytes:
    """A real JPEG cut in half: ``Image.open`` and ``verify()`` succeed, ``load()`` fails."""
    from PIL import Image

    data = _jpeg_bytes(99, (64, 64))
    cut = data[: len(data) // 2]
    with Image.open(io.BytesIO(cut)) as im:
        im.verify()  # the old up-front check passes it
    with pytest.raises(OSError, match="truncated"), Image.open(io.BytesIO(cut)) as im:
        im.load()
    return cut


def _jpeg_folder(root: Path, per_class: int = 6) -> Path:
    for c, cls in enumerate(("cat", "dog")):
        for i in range(per_class):
            _write(root / cls / f"img{i}.jpg", _jpeg_bytes(100 * c + i))
    return root


# ---------------------------------------------------------------------------------------------------------------
# 1. channels-first image arrays
# ---------------------------------------------------------------------------------------------------------------


def test_channels_first_arrays_are_the_channels_last_images() -> None:
    x = _rgb()
    y = np.arange(12) % 2
    cf = from_arrays(x.transpose(0, 3, 1, 2), y, modality="image")
    np.testing.assert_array_equal(cf.inputs, x)
    grey = x[..., 0]
    g = from_arrays(grey[:, None], y)  # (N, 1, H, W), modality inferred
    assert g.modality == "image"
    np.testing.assert_array_equal(g.inputs, grey)
    np.testing.assert_array_equal(as_dataset(x.transpose(0, 3, 1, 2), modality="image").inputs, x)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [((4, 3, 8, 3), "channels-first or channels-last"), ((4, 1, 8, 1), "channels-first or channels-last"),
     ((4, 8, 8, 4), "(N, 1 or 3, H, W)"), ((4, 8, 8, 2, 3), "(N, H, W)"), ((4, 8), "tabular")],
)
def test_image_array_shapes_that_cannot_be_images(shape: tuple[int, ...], fragment: str) -> None:
    with pytest.raises(DataError) as e:
        from_arrays(np.zeros(shape, dtype=np.uint8), np.arange(4) % 2, modality="image")
    msg = _one_sentence(e.value)
    assert fragment in msg or "image arrays must be" in msg, msg


def test_fit_and_predict_on_channels_first_and_float_arrays(blobs_images) -> None:
    x, y = blobs_images
    clf = TransferClassifier(epochs=1, **TINY).fit(x[:, None], y)  # (N, 1, H, W): a RuntimeError before
    ref = clf.predict_proba(x)
    np.testing.assert_array_equal(clf.predict_proba(x[:, None]), ref)
    np.testing.assert_array_equal(clf.predict_proba(x.astype(np.float32) / 255.0), ref)
    np.testing.assert_array_equal(clf.predict_proba(np.repeat(x[..., None], 3, -1).transpose(0, 3, 1, 2)),
                                  clf.predict_proba(np.repeat(x[..., None], 3, -1)))
    with pytest.raises(DataError, match="X.astype"):
        clf.predict(x.astype(np.float32))  # floats in 0..255 are refused, with the remedy


# ---------------------------------------------------------------------------------------------------------------
# 2. float and other-dtype image arrays
# ---------------------------------------------------------------------------------------------------------------


def test_float_images_in_unit_range_are_scaled_to_uint8() -> None:
    x = _rgb()
    f = x.astype(np.float64) / 255.0
    d = from_arrays(f, np.arange(12) % 2)  # (N, H, W, 3) floats: images, not "tabular data must be 2-D"
    assert d.modality == "image" and d.inputs.dtype == np.uint8
    np.testing.assert_array_equal(d.inputs, x)
    grey = from_arrays(f[..., 0].astype(np.float32), np.arange(12) % 2)
    np.testing.assert_array_equal(grey.inputs, x[..., 0])
    ints = from_arrays(x.astype(np.int64), np.arange(12) % 2)  # integers within 0..255 are exact
    np.testing.assert_array_equal(ints.inputs, x)
    splits = as_splits(f, np.arange(12) % 2)
    assert splits.train.modality == "image"


@pytest.mark.parametrize(
    ("x", "fragment"),
    [
        (np.full((4, 8, 8, 3), 200.0, dtype=np.float32), "X.astype(np.uint8)"),
        (np.full((4, 8, 8), -0.5), "[-0.5, -0.5]"),
        (np.full((4, 8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.full((4, 8, 8), 300, dtype=np.int32), "[300, 300]"),
        (np.zeros((4, 8, 8), dtype=bool), "dtype bool"),
    ],
    ids=["float-0-255", "negative", "nan", "int-over-255", "bool"],
)
def test_image_arrays_out_of_range_say_what_images_must_be(x: np.ndarray, fragment: str) -> None:
    with pytest.raises(DataError) as e:
        from_arrays(x, np.arange(4) % 2)
    msg = _one_sentence(e.value)
    assert fragment in msg and "float in [0, 1]" in msg and "(N, H, W)" in msg, msg


def test_tabular_model_given_images_names_both_forms() -> None:
    with pytest.raises(DataError) as e:
        as_dataset(np.zeros((3, 4, 5), dtype=np.float32), modality="tabular")
    msg = _one_sentence(e.value)
    assert "tabular data must be 2-D" in msg and "image arrays must be" in msg


def test_list_of_images_of_mixed_sizes_is_refused_and_equal_sizes_accepted() -> None:
    from PIL import Image

    imgs = [np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8)]
    with pytest.raises(DataError) as e:
        from_arrays(imgs, [0, 1])
    assert "different sizes" in _one_sentence(e.value) and "(8, 8)" in str(e.value)
    pil = [Image.fromarray(a) for a in _rgb(4)]
    d = from_arrays(pil, [0, 1, 0, 1])
    assert d.modality == "image" and d.inputs.shape == (4, 10, 8, 3)


# ---------------------------------------------------------------------------------------------------------------
# 3. labels: regression targets, missing labels, all-unique labels
# ---------------------------------------------------------------------------------------------------------------


def test_regression_targets_are_refused_everywhere(tmp_path: Path) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    target = rng.normal(size=60)
    for call in (lambda: from_arrays(X, target), lambda: from_arrays(pd.DataFrame(X), pd.Series(target)),
                 lambda: as_splits(X, target), lambda: TransferClassifier().fit(X, target)):
        with pytest.raises(DataError) as e:
            call()
        assert "regression targets" in _one_sentence(e.value)
    csv = _write(tmp_path / "r.csv", "text,label\n" + "".join(f"t{i},{v:.4f}\n" for i, v in enumerate(target)))
    with pytest.raises(DataError, match="regression targets"):
        from_text_table(csv)


def test_repeating_non_integer_labels_stay_classes() -> None:
    stars = np.array([0.5, 1.0, 1.5, 2.0] * 5)
    d = from_arrays(np.zeros((20, 2)), stars)
    assert d.classes == ["0.5", "1.0", "1.5", "2.0"]
    assert as_dataset(np.zeros((2, 2)), [1.0, 2.0], classes=d.classes).labels.tolist() == [1, 3]


@pytest.mark.parametrize(
    "labels",
    [[0, np.nan, 1, np.nan], np.array(["a", None, "b", None], dtype=object), ["a", "", "b", "  "],
     "pandas-na"],
    ids=["nan", "none", "empty", "pandas-na"],
)
def test_missing_labels_are_refused_with_the_rows(labels) -> None:
    import pandas as pd

    if isinstance(labels, str):
        labels = pd.Series(["a", pd.NA, "b", pd.NA], dtype="string")
    for call in (lambda: from_arrays(np.zeros((4, 2)), labels), lambda: as_dataset(np.zeros((4, 2)), labels),
                 lambda: as_dataset(np.zeros((4, 2)), labels, classes=["a", "b", "0", "1"])):
        with pytest.raises(DataError) as e:
            call()
        msg = _one_sentence(e.value)
        assert "rows 1 and 3" in msg and "missing" in msg, msg


def test_blank_labels_in_a_table_are_dropped_with_their_lines(tmp_path: Path) -> None:
    rows = "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(10))
    csv = _write(tmp_path / "r.csv", "text,label\n" + rows + "odd one,   \nanother,\n")
    with pytest.warns(UserWarning, match=r"missing label \(2\): lines 12 and 13"):
        s = from_text_table(csv, val_fraction=0.0, test_fraction=0.0)
    assert s.classes == ["neg", "pos"] and len(s.train) == 10


def test_every_label_different_warns() -> None:
    with pytest.warns(UserWarning, match="Every one of the 12 labels"):
        d = from_arrays(np.zeros((12, 2)), np.arange(100, 112))
    assert d.num_classes == 12


def test_integer_labels_sort_as_numbers_in_the_api() -> None:
    d = as_dataset(np.zeros((4, 2)), [3, 10, 3, 10])  # was classes ['10', '3'] and then "Label 3 outside 0..1"
    assert d.classes == ["3", "10"] and d.labels.tolist() == [0, 1, 0, 1]
    by_name = as_dataset(np.zeros((3, 2)), [10.0, 3.0, 10.0], classes=["3", "10"])
    assert by_name.labels.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="'7'.*not among the model's classes"):
        as_dataset(np.zeros((2, 2)), [3, 7], classes=["3", "10"])


# ---------------------------------------------------------------------------------------------------------------
# 4. links in image folders
# ---------------------------------------------------------------------------------------------------------------


def test_link_loop_in_a_class_folder_is_read_once_and_named(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs", per_class=4)
    os.symlink(root / "cat", root / "cat" / "loop")  # cat/loop/loop/loop/... before
    os.symlink(root / "cat", root / "dog" / "cats_too")  # another class's folder: not read as dogs
    os.symlink(tmp_path / "nowhere.jpg", root / "dog" / "gone.jpg")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = from_image_folder(root, 0.0, 0.0)
    assert s.train.class_counts().tolist() == [4, 4]
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1, msgs
    for fragment in ("Skipped 3", "cat/loop (link to a folder already read)", "dog/cats_too", "gone.jpg (broken link)"):
        assert fragment in msgs[0], msgs[0]


def test_link_between_splits_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "pre"
    _jpeg_folder(root / "train", 4)
    _jpeg_folder(root / "test", 2)
    os.symlink(root / "train" / "cat", root / "test" / "cat" / "leak")
    with pytest.warns(UserWarning, match="test/cat/leak"):
        s = from_image_folder(root, 0.0, 0.0)
    assert len(s.test) == 4 and len(s.train) == 8


def test_predict_folder_expansion_follows_no_loop(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs", 2)
    os.symlink(root, root / "cat" / "up")
    with pytest.warns(UserWarning, match="already read"):
        files = expand_image_paths([root])
    assert len(files) == 4 and files == sorted(files)
    with pytest.raises(DataError, match=str(tmp_path / "nope.png")):
        expand_image_paths([tmp_path / "nope.png"])


# ---------------------------------------------------------------------------------------------------------------
# 5. a --data argument that names a missing file
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["reviews.csv", "data/images", "./imgs", "~/no-such-transferkit-data.tsv"])
def test_missing_path_says_it_does_not_exist(arg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = resolve_data_arg(arg)
    with pytest.raises(DataError) as e:
        load_data(cfg)
    msg = _one_sentence(e.value)
    assert "does not exist" in msg and str(Path(arg).expanduser().absolute()) in msg and "Unknown" not in msg
    with pytest.raises(DataError, match="does not exist"):
        as_splits(arg)  # fit("reviews.csv")


def test_resolve_data_arg_paths_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "r.csv", "text,label\n")
    assert resolve_data_arg("r.csv").path == "r.csv" and resolve_data_arg("r.csv").name is None
    assert resolve_data_arg("animal-mnist").name == "animal-mnist"
    with pytest.raises(DataError) as e:
        load_data(resolve_data_arg("fashon-mnist"))
    assert "did you mean 'fashion-mnist'" in str(e.value) and "no file or folder" in str(e.value)


def test_cli_fit_on_a_missing_csv_says_so_and_writes_nothing(tmp_path: Path) -> None:
    proc = run_cli("fit", "--data", "reviews.csv", *CLI_TINY, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert_user_error(proc, "does not exist", str(tmp_path / "reviews.csv"))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# 6. truncated JPEGs
# ---------------------------------------------------------------------------------------------------------------


def test_truncated_jpeg_is_caught_by_the_folder_check(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs")
    _write(root / "cat" / "cut.jpg", _truncated_jpeg())
    _write(root / "dog" / "padded.jpg", _jpeg_bytes(7) + b"\0" * 5000)  # trailing bytes after the end marker
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable file\(s\).*cat/cut.jpg \(truncated\)"):
        s = from_image_folder(root, 0.0, 0.0)
    assert len(s.train) == 13 and str(root / "dog" / "padded.jpg") in s.train.inputs


def test_image_failing_during_training_is_replaced_deterministically(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs")
    s = from_image_folder(root, 0.0, 0.0)
    victim = s.train.inputs[3]
    Path(victim).write_bytes(_truncated_jpeg())  # after the check, as if the file changed under the run

    def epoch() -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = make_loader(s.train, IMG_PRE, image_size=16, train=True, augment="light", batch_size=4, seed=3)
        return list(loader)

    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable file\(s\).*truncated.*takes its place"):
        first = epoch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = epoch()
    assert sum(len(b[1]) for b in first) == len(s.train)
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the stand-in keeps its own label: the next example in the data set
    order = make_loader(s.train, IMG_PRE, image_size=16, train=True, batch_size=4, seed=3).sampler.order().tolist()
    labels = torch.cat([b[1] for b in first]).tolist()
    pos = order.index(3)
    assert labels[pos] == int(s.train.labels[4])
    # evaluation still refuses it: a stand-in would change a reported metric
    with pytest.raises(DataError, match="cannot be read"):
        list(make_loader(s.train, IMG_PRE, image_size=16, train=False, batch_size=4))


def test_real_fit_survives_a_truncated_jpeg(tmp_path: Path) -> None:
    root = _jpeg_folder(tmp_path / "imgs", per_class=8)
    splits = from_image_folder(root, 0.25, 0.0)
    Path(splits.train.inputs[0]).write_bytes(_truncated_jpeg())
    with pytest.warns(UserWarning, match="truncated"):
        clf = TransferClassifier(epochs=1, **TINY).fit(splits)
    assert len(clf.history_) == 1


# ---------------------------------------------------------------------------------------------------------------
# 7. tables that cannot be read
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.csv", b"", "is empty"),
        ("header.csv", b"text,label\n", "no rows"),
        ("semi.csv", b"text;label\nhello;a\nworld;b\n", "separate columns with ';'"),
        ("latin1.csv", "text,label\ncaf\xe9,a\nbar,b\n".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "a", "label": "x"}\nnot json\n', "Line 2"),
        ("list.jsonl", b'{"text": "a", "label": "x"}\n[1, 2]\n', "Line 2"),
        ("empty.jsonl", b"", "is empty"),
        ("notgz.csv.gz", b"text,label\na,b\n", "Not a gzipped file"),
        ("one.csv", b"text,label\na,x\nb,x\n", "only 1 class"),
    ],
)
def test_unreadable_tables_are_one_sentence(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    p = _write(tmp_path / name, content)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(path=str(p)))
    assert fragment in _one_sentence(e.value), str(e.value)


def test_folder_where_a_table_is_expected(tmp_path: Path) -> None:
    from transferkit.data.tables import read_table

    (tmp_path / "t.csv").mkdir()
    with pytest.raises(DataError, match="is a folder, not a CSV file"):
        read_table(tmp_path / "t.csv")


def test_unreadable_table_and_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the user may not read (simulated: the tests may run as root, who reads any file)."""
    import pandas as pd
    from PIL import Image

    def denied(path: object, *a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    p = _write(tmp_path / "r.csv", "text,label\na,x\nb,y\n")
    monkeypatch.setattr(pd, "read_csv", denied)
    with pytest.raises(DataError) as e:
        from_text_table(p)
    assert "permission denied" in _one_sentence(e.value)
    root = _jpeg_folder(tmp_path / "imgs", 3)
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda f, *a, **k: denied(f) if str(f).endswith("cat/img0.jpg")
                        else real_open(f, *a, **k))
    with pytest.warns(UserWarning, match=r"cat/img0.jpg \(not readable: permission denied\)"):
        s = from_image_folder(root, 0.0, 0.0)
    assert len(s.train) == 5


def test_unreadable_sub_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _jpeg_folder(tmp_path / "imgs", 3)
    _write(root / "dog" / "more" / "x.jpg", _jpeg_bytes(5))
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith("dog/more"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.warns(UserWarning, match=r"dog/more \(folder not readable: Permission denied\)"):
        s = from_image_folder(root, 0.0, 0.0)
    assert s.train.class_counts().tolist() == [3, 3]


def test_existing_path_given_as_a_name_says_to_use_data_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="set data.path instead of data.name"):
        load_data(DataConfig(name=str(tmp_path)))
