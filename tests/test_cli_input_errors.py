"""Bad config files, overrides, numeric arguments and output paths: one sentence, exit 2, nothing written.

Everything here is detected before any model is built or any data is read, so the CLI runs in-process
(``transferkit.cli.main``) and each case takes milliseconds; only the top-k and empty-folder cases of ``predict``
need a fitted model, made once for the module.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from transferkit import cli
from transferkit.config import RunConfig, apply_overrides, load_yaml
from transferkit.errors import ConfigError, DataError
from transferkit.io import check_output_path
from transferkit.methods import available_methods, create_method, get_method_class

# --- helpers ---------------------------------------------------------------------------------------------------


def user_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    """Run the CLI in-process: exit status 2, no traceback, exactly one one-sentence error line naming fragments."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("transferkit: error:")]
    assert len(lines) == 1, err
    sentence = lines[0].removeprefix("transferkit: error: ")
    assert sentence[-1] in ".?)", sentence  # one finished sentence
    for f in fragments:
        assert f in sentence, (f, sentence)
    return sentence


def nothing_written(folder: Path, before: set[str]) -> None:
    """No new file or folder (a run folder, a ``.partial``, a temporary file) appeared in ``folder``."""
    assert {p.name for p in folder.iterdir()} == before


# --- 1, 2: the config file itself ------------------------------------------------------------------------------

CONFIG_FILES = {
    "binary": (b"\x00\xff\xfe\x89PNG garbage\x00", ["not a text file", "not UTF-8"]),
    "empty": (b"", ["is empty", "--data"]),
    "comments-only": (b"# nothing here\n\n# at all\n", ["is empty"]),
    "empty-mapping": (b"{}\n", ["is empty"]),
    "syntax-error": (b"train: [epochs: 2\n", ["not valid YAML", "line"]),
    "bad-indentation": (b"train:\n  epochs: 2\n lr: 3\n", ["not valid YAML"]),
    "two-documents": (b"train: {}\n---\nmodel: {}\n", ["not valid YAML"]),
    "python-tag": (b"train: !!python/object/apply:os.system ['true']\n", ["not valid YAML"]),
    "top-level-list": (b"- train\n- model\n", ["holds a list", "mapping of sections"]),
    "top-level-scalar": (b"42\n", ["holds a number", "mapping of sections"]),
    "top-level-text": (b"just some words\n", ["holds a text value"]),
    "unknown-section": (b"trian:\n  epochs: 2\n", ["'trian'", "did you mean 'train'"]),
    "unknown-key": (b"train:\n  epocs: 2\n", ["train.epocs", "did you mean 'train.epochs'"]),
    "section-is-scalar": (b"train: 3\n", ["'train' must be a mapping"]),
    "negative-epochs": (b"train:\n  epochs: -1\n", ["'train.epochs' must be a positive number, not -1"]),
    "zero-batch-size": (b"train:\n  batch_size: 0\n", ["'train.batch_size'", "positive"]),
    "negative-lr": (b"train:\n  lr: -0.1\n", ["'train.lr'", "positive"]),
    "list-for-number": (b"train:\n  lr: [0.1, 0.2]\n", ["'train.lr' must be a number"]),
    "text-for-number": (b"train:\n  epochs: many\n", ["'train.epochs' must be a whole number"]),
    "infinite-lr": (b"train:\n  lr: .inf\n", ["'train.lr' must be a finite number"]),
    "bad-choice": (b"train:\n  optimizer: adam\n", ["'train.optimizer'", "adamw"]),
    "mapping-for-text": (b"model:\n  backbone: {name: x}\n", ["'model.backbone' must be a text value"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_bad_config_file_is_one_sentence_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    content, fragments = CONFIG_FILES[case]
    (tmp_path / "c.yaml").write_bytes(content)
    before = {p.name for p in tmp_path.iterdir()}
    sentence = user_error(capsys, ["fit", "c.yaml", "--out", str(tmp_path / "run")], *fragments)
    nothing_written(tmp_path, before)
    with pytest.raises(ConfigError) as e:  # the same sentence from the Python API
        load_yaml("c.yaml")
    assert str(e.value) == sentence


def test_config_path_that_is_a_folder_or_missing(tmp_path, capsys):
    (tmp_path / "conf").mkdir()
    user_error(capsys, ["fit", str(tmp_path / "conf")], "is a folder", "YAML file")
    user_error(capsys, ["fit", str(tmp_path / "missing.yaml")], "does not exist")
    user_error(capsys, ["compare", str(tmp_path / "conf"), "--methods", "dann"], "is a folder")


def test_unreadable_config(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 1\n")
    if os.geteuid() != 0:  # root reads any file: provoke the same refusal below instead
        cfg.chmod(0)
        user_error(capsys, ["fit", str(cfg)], "cannot be read", "permissions")
        cfg.chmod(0o600)

    def denied(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    user_error(capsys, ["fit", str(cfg)], "cannot be read (Permission denied)", "check its permissions")


def test_a_byte_order_mark_is_fine(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes("train:\n  epochs: 2\n".encode("utf-8-sig"))
    assert load_yaml(cfg).train.epochs == 2


# --- 7: --set overrides --------------------------------------------------------------------------------------

OVERRIDES = {
    "no-equals": ("foo", ["must look like section.key=value"]),
    "no-key": ("=3", ["must look like section.key=value"]),
    "empty-part": ("train.=3", ["must look like section.key=value"]),
    "unknown-section": ("trian.epochs=2", ["'trian'", "did you mean 'train'"]),
    "unknown-key": ("train.epocs=2", ["'train.epocs'", "did you mean 'train.epochs'"]),
    "unknown-nested": ("train.foo.bar=1", ["Unknown config key 'train.foo'"]),
    "value-as-section": ("train.epochs.x=1", ["'train.epochs' is a single value", "--set train.epochs=VALUE"]),
    "method-param-as-section": ("model.method_params.x.y=1", ["'model.method_params.x' is a method parameter"]),
    "wrong-type": ("train.epochs=abc", ["'train.epochs' must be a whole number, not 'abc'"]),
    "float-for-int": ("train.epochs=2.5", ["'train.epochs' must be a whole number"]),
    "bool-from-text": ("train.deterministic=maybe", ["'train.deterministic' must be true or false"]),
    "list-for-scalar": ("train.lr=[1,2]", ["'train.lr' must be a number, not [1, 2]"]),
    "nan": ("train.lr=.nan", ["'train.lr' must be a finite number"]),
    "inf": ("train.weight_decay=inf", ["'train.weight_decay' must be a finite number"]),
    "section-as-value": ("data=3", ["'data' must be a mapping"]),
    "dict-field-as-value": ("model.method_params=3", ["'model.method_params' must be a mapping"]),
    "negative-epochs": ("train.epochs=-3", ["'train.epochs' must be a positive number, not -3"]),
    "negative-lr": ("train.lr=-1", ["'train.lr' must be a positive number"]),
    "negative-weight-decay": ("train.weight_decay=-1", ["'train.weight_decay' must be 0 or positive"]),
    "momentum-above-one": ("train.momentum=1.5", ["'train.momentum' must be in [0, 1)"]),
    "zero-early-stopping": ("train.early_stopping=0", ["'train.early_stopping' must be at least 1 epoch"]),
    "negative-workers": ("train.num_workers=-1", ["'train.num_workers' must be 0 or positive"]),
    "negative-freeze-blocks": ("train.freeze_blocks=-1", ["'train.freeze_blocks' must be 0 or positive"]),
    "negative-head-epochs": ("train.head_epochs=-1", ["'train.head_epochs' must be 0 or positive"]),
    "zero-grad-clip": ("train.grad_clip=0", ["'train.grad_clip' must be a positive number"]),
    "zero-layer-decay": ("train.layer_decay=0", ["'train.layer_decay' must be a positive number"]),
    "negative-head-lr-scale": ("train.head_lr_scale=-1", ["'train.head_lr_scale' must be a positive number"]),
    "fraction-above-one": ("data.val_fraction=1.5", ["'data.val_fraction' must be in [0, 1)"]),
    "zero-image-size": ("model.image_size=0", ["'model.image_size' must be a positive number"]),
    "bad-choice": ("train.schedule=linear", ["'train.schedule'", "cosine"]),
    "empty-out": ("out=", ["'out' must be a text value"]),
}


@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_bad_override_is_one_sentence_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    item, fragments = OVERRIDES[case]
    user_error(capsys, ["fit", "--set", item, "--out", str(tmp_path / "run")], *fragments)
    assert list(tmp_path.iterdir()) == []


def test_cli_flag_values_are_not_parsed_as_yaml():
    """``--out 0x10`` is the folder '0x10', not the number 16; ``--set out=0x10`` parses (documented)."""
    assert apply_overrides(RunConfig(), [("out", "0x10")]).out == "0x10"
    assert apply_overrides(RunConfig(), [("model.backbone", "yes")]).model.backbone == "yes"
    assert apply_overrides(RunConfig(), ["out=0x10"]).out == "16"


def test_good_values_still_pass():
    cfg = apply_overrides(RunConfig(), ["train.momentum=0", "train.early_stopping=1", "train.grad_clip=null",
                                        "train.weight_decay=0", "train.freeze_blocks=0", "train.head_epochs=0"])
    assert cfg.train.grad_clip is None and cfg.train.early_stopping == 1


# --- 3: method_params ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_unknown_method_param_lists_the_valid_keys(name):
    import dataclasses

    valid = [f.name for f in dataclasses.fields(get_method_class(name).Params)]
    with pytest.raises(ConfigError) as e:
        create_method(name, {"zzqx_not_a_key": 1})
    sentence = str(e.value)
    assert "\n" not in sentence and "'model.method_params.zzqx_not_a_key'" in sentence
    if valid:
        assert f"for method '{name}'" in sentence
        assert all(k in sentence for k in valid), sentence
    else:
        assert f"Method '{name}' takes no method_params" in sentence and "remove it" in sentence


def test_unknown_method_param_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"\(its keys are: alpha, beta, ramp, schedule\); did you mean "
                                          r"'model.method_params.alpha'\?$"):
        create_method("l2-sp", {"alfa": 0.1})
    with pytest.raises(ConfigError, match="did you mean 'model.method_params.C'"):
        create_method("probe", {"c": 1.0})  # a case slip
    with pytest.raises(ConfigError, match="'model.method_params.x', 'model.method_params.y' were given"):
        create_method("finetune", {"x": 1, "y": 2})
    assert create_method("l2-sp", {"alpha": 0.1}).params.alpha == 0.1


# --- 4: numeric arguments --------------------------------------------------------------------------------------

NUMERIC = {
    "top-k-negative": (["predict", "RUN", "x.png", "--top-k", "-1"], ["--top-k", "at least 1, not -1"]),
    "top-k-zero": (["predict", "RUN", "x.png", "--top-k", "0"], ["--top-k", "at least 1, not 0"]),
    "top-k-text": (["predict", "RUN", "x.png", "--top-k", "all"], ["--top-k", "not 'all'"]),
    "epochs-zero": (["fit", "--epochs", "0"], ["--epochs", "at least 1"]),
    "epochs-negative": (["fit", "--epochs", "-3"], ["--epochs", "at least 1, not -3"]),
    "seeds-zero": (["compare", "c.yaml", "--methods", "dann", "--seeds", "0"], ["--seeds", "at least 1"]),
    "max-samples-negative": (["rank", "--data", "d", "--backbones", "b", "--max-samples", "-5"], ["--max-samples"]),
    "image-size-zero": (["rank", "--data", "d", "--backbones", "b", "--image-size", "0"], ["--image-size"]),
    "image-size-negative": (["rank", "--data", "d", "--backbones", "b", "--image-size", "-3"], ["--image-size"]),
    "engine-unknown": (["rank", "--data", "d", "--backbones", "b", "--engine", "tpu"], ["--engine", "'tpu'"]),
    "seed-text": (["rank", "--data", "d", "--backbones", "b", "--seed", "x"], ["--seed", "invalid int"]),
    "split-unknown": (["evaluate", "RUN", "d", "--split", "dev"], ["--split", "'dev'"]),
    "unknown-command": (["trian"], ["invalid choice: 'trian'"]),
    "cache-without-action": (["cache"], ["ACTION"]),
    "set-without-value": (["fit", "--set"], ["--set", "expected one argument"]),
    "predict-without-paths": (["predict", "RUN"], ["paths"]),
}


@pytest.mark.parametrize("case", sorted(NUMERIC))
def test_bad_argument_is_one_sentence(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, fragments = NUMERIC[case]
    user_error(capsys, argv, *fragments)
    assert list(tmp_path.iterdir()) == []


# --- 5: output paths -------------------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A folder with an existing sub-folder ``adir``, a file ``afile`` and a minimal valid config ``c.yaml``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 1\n")
    return tmp_path


LONG = "a" * 300 + ".csv"
OUTPUTS = {
    # the run folder does not exist: the sentence is about --out, so the path was checked before the model loaded
    "predict-out-folder": (["predict", "no-model", "x.png", "--out", "adir"], ["--out 'adir' is an existing folder"]),
    "predict-out-below-file": (["predict", "no-model", "x.png", "--out", "afile/p.csv"], ["below", "which is a file"]),
    "predict-out-deep-below-file": (["predict", "no-model", "x.png", "--out", "afile/d/p.csv"], ["which is a file"]),
    "predict-out-too-long": (["predict", "no-model", "x.png", "--out", LONG], ["304 characters", "shorter name"]),
    "predict-out-long-folder": (["predict", "no-model", "x.png", "--out", "b" * 300 + "/p.csv"], ["shorter name"]),
    "predict-out-empty": (["predict", "no-model", "x.png", "--out", ""], ["--out is empty"]),
    "evaluate-out-folder": (["evaluate", "no-model", "d", "--out", "adir"], ["--out 'adir' is an existing folder"]),
    "evaluate-out-below-file": (["evaluate", "no-model", "d", "--out", "afile/m.json"], ["which is a file"]),
    "rank-out-folder": (["rank", "--data", "d", "--backbones", "b", "--out", "adir"], ["is an existing folder"]),
    "rank-out-too-long": (["rank", "--data", "d", "--backbones", "b", "--out", LONG], ["shorter name"]),
    "fit-out-file": (["fit", "c.yaml", "--out", "afile"], ["run folder 'afile' is an existing file"]),
    "fit-out-below-file": (["fit", "c.yaml", "--out", "afile/run"], ["which is a file"]),
    "fit-out-too-long": (["fit", "c.yaml", "--out", "r" * 300], ["shorter name"]),
    "fit-set-out-file": (["fit", "c.yaml", "--set", "out=afile"], ["run folder 'afile' is an existing file"]),
    "compare-out-file": (["compare", "c.yaml", "--methods", "dann", "--out", "afile"], ["comparison folder 'afile'"]),
}


@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_bad_output_path_is_refused_up_front(case, workdir, capsys):
    argv, fragments = OUTPUTS[case]
    before = {p.name for p in workdir.iterdir()}
    user_error(capsys, argv, *fragments)
    nothing_written(workdir, before)
    assert (workdir / "afile").read_text() == "x"


def test_unwritable_output_folder(workdir, capsys, monkeypatch):
    locked = workdir / "locked"
    locked.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: the os.access stand-in below covers it
        locked.chmod(0o500)
        user_error(capsys, ["predict", "no-model", "x.png", "--out", "locked/p.csv"], "not writable")
        locked.chmod(0o700)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    user_error(capsys, ["predict", "no-model", "x.png", "--out", "locked/p.csv"], "'locked/p.csv' cannot be written",
               "not writable")
    user_error(capsys, ["fit", "c.yaml", "--out", "locked/run"], "run folder 'locked/run' cannot be written")
    assert list(locked.iterdir()) == []


def test_check_output_path_accepts_what_writers_create(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper" / "p.csv") == tmp_path / "new" / "deeper" / "p.csv"
    assert check_output_path(tmp_path, kind="folder") == tmp_path  # an existing run folder: --overwrite decides
    (tmp_path / "old.csv").write_text("x")
    assert check_output_path(tmp_path / "old.csv").name == "old.csv"  # replaced atomically
    assert check_output_path("a" * 200 + ".csv").name.startswith("a")
    assert not (tmp_path / "new").exists()  # checking creates nothing


# --- 5 (root fallback) and 6: how main reports errors and warnings ---------------------------------------------


def _command(monkeypatch, body) -> None:
    """Replace the ``datasets`` command (no arguments) by ``body(args)``."""
    monkeypatch.setitem(cli._COMMANDS, "datasets", body)


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES", "EROFS", "EISDIR", "ENOTDIR", "ENOENT", "EEXIST"])
def test_os_error_while_writing_an_output_is_one_sentence(code, tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.csv"

    def writes(args) -> int:  # noqa: ANN001
        cli._output(out, "file")
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(tmp_path / ".p.csv.1234.tmp"))

    _command(monkeypatch, writes)
    sentence = user_error(capsys, ["datasets"], "Cannot write", os.strerror(getattr(errno, code)))
    assert ("disk space" in sentence) == (code == "ENOSPC")


def test_os_error_that_is_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    def opens_a_missing_internal_file(args) -> int:  # noqa: ANN001
        cli._output(tmp_path / "p.csv", "file")
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/usr/lib/transferkit/missing.json")

    _command(monkeypatch, opens_a_missing_internal_file)
    with pytest.raises(FileNotFoundError):
        cli.main(["datasets"])

    def no_filename(args) -> int:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    _command(monkeypatch, no_filename)
    with pytest.raises(OSError):
        cli.main(["datasets"])

    def other_errno(args) -> int:  # noqa: ANN001
        raise OSError(errno.EBADF, "Bad file descriptor", str(tmp_path / "p.csv"))

    _command(monkeypatch, other_errno)
    with pytest.raises(OSError):
        cli.main(["datasets"])


def test_permission_error_anywhere_names_the_path(capsys, monkeypatch):
    def cache(args) -> int:  # noqa: ANN001
        raise PermissionError(errno.EACCES, "Permission denied", "/root/.cache/transferkit/x")

    _command(monkeypatch, cache)
    user_error(capsys, ["datasets"], "Cannot use '/root/.cache/transferkit/x': Permission denied; check its")


def test_error_message_is_printed_on_one_line(capsys, monkeypatch):
    def fails(args) -> int:  # noqa: ANN001
        raise DataError("The data is wrong\n  in two lines;   fix it.")

    _command(monkeypatch, fails)
    assert user_error(capsys, ["datasets"]) == "The data is wrong in two lines; fix it."


def test_warnings_print_as_one_line_and_the_handler_is_restored(capsys, monkeypatch):
    before = warnings.showwarning

    def warns(args) -> int:  # noqa: ANN001
        warnings.warn("3 files were skipped:\n  a.png\n  b.png", UserWarning, stacklevel=1)
        return 0

    _command(monkeypatch, warns)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["datasets"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["transferkit: warning: 3 files were skipped: a.png b.png"]
    assert warnings.showwarning is before


# --- commands that need a fitted model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 3-class tiny random timm model fitted for one epoch on 24 random 32x32 images."""
    from transferkit import TransferClassifier

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
    y = np.array(["a", "b", "c"] * 8)
    clf = TransferClassifier(backbone="timm:test_resnet", pretrained=False, image_size=32, progress=False,
                             batch_size=8, epochs=1)
    folder = tmp_path_factory.mktemp("model") / "m"
    clf.fit(x, y).save(folder)
    return folder


def _images(folder: Path, n: int = 2) -> Path:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_top_k_above_the_number_of_classes_lists_them_all(tiny_model, tmp_path, capsys):
    images = _images(tmp_path / "imgs")
    assert cli.main(["predict", str(tiny_model), str(images), "--top-k", "7", "--out", str(tmp_path / "p.csv")]) == 0
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header == ["input", "predicted", "probability", "top2", "top2_probability", "top3", "top3_probability"]
    assert "Traceback" not in capsys.readouterr().err


def test_predict_on_an_empty_folder(tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    user_error(capsys, ["predict", str(tiny_model), str(tmp_path / "empty"), "--out", str(tmp_path / "p.csv")],
               "No image files")
    assert not (tmp_path / "p.csv").exists()


def test_predict_out_checked_before_the_model_is_used(tiny_model, tmp_path, capsys):
    images = _images(tmp_path / "imgs")
    user_error(capsys, ["predict", str(tiny_model), str(images), "--out", str(images)], "is an existing folder")
    assert sorted(p.name for p in images.iterdir()) == ["0.png", "1.png"]
