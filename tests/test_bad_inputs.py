"""Bad input, as a new user and as a hostile one would give it: one sentence, exit 2, and nothing left behind.

Every case runs the real command (``transferkit.cli.main`` in-process: a subprocess would prove nothing more) or the
real Python API, and asserts the same contract:

- the CLI exits with status 2 (the API raises a :class:`~transferkit.errors.TransferkitError`),
- stderr holds exactly one ``transferkit: error:`` line, one sentence, and no traceback,
- no ``.partial`` folder, lock-free half run or output file is left anywhere under the test's folder.

Cases that need a fitted model share one tiny model (a random ``timm:test_resnet`` at 32 px, fitted once per module).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli_helpers import image_folder
from transferkit import TransferClassifier
from transferkit.cli import main
from transferkit.errors import TransferkitError

TINY = ["--backbone", "timm:test_resnet", "--set", "model.pretrained=false", "--set", "model.image_size=32",
        "--set", "train.progress=false"]


# --- shared material ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run folder (image model, classes cat/dog)."""
    root = tmp_path_factory.mktemp("fitted")
    data = image_folder(root / "imgs")
    rc = main(["fit", "--data", str(data), *TINY, "--epochs", "1", "--out", str(root / "run")])
    assert rc == 0
    return root / "run"


class Evil:
    """A pickle that creates a marker file when unpickled: proof that nothing was ever unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def write_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Evil(str(marker))}, fh)
    return path


def tiny_weights(path: Path, state: dict[str, Any] | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file(state or {"conv1.weight": torch.zeros(3, 3, 1, 1)}, str(path))
    return path


# --- one case ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """``make(tmp, fitted)`` prepares files and returns CLI argv (a list) or an API call (a callable)."""

    id: str
    make: Callable[[Path, Callable[[], Path]], list[str] | Callable[[], Any]]
    fragments: tuple[str, ...] = ()
    absent: tuple[str, ...] = ("out",)  # names under tmp that must not exist afterwards
    kept: tuple[str, ...] = ()  # what the user had before the command and must still have (an interrupted run)
    extra_check: Callable[[Path], None] | None = None
    marks: list[Any] = field(default_factory=list)


def _fit(tmp: Path, *extra: str, data: Path | None = None) -> list[str]:
    data = data or image_folder(tmp / "imgs")
    return ["fit", "--data", str(data), *TINY, "--epochs", "1", "--out", str(tmp / "out"), *extra]


def _cfg(tmp: Path, content: bytes | str) -> list[str]:
    p = tmp / "c.yaml"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return ["fit", str(p), "--out", str(tmp / "out")]


def _predict(fitted: Callable[[], Path], tmp: Path, *extra: str, paths: list[str] | None = None) -> list[str]:
    run = fitted()
    imgs = paths or [str(image_folder(tmp / "pred", n=2))]
    return ["predict", str(run), *imgs, *extra]


def _copy_model(fitted: Callable[[], Path], tmp: Path) -> Path:
    dest = tmp / "model"
    shutil.copytree(fitted(), dest)
    return dest


def _edit_model_json(fitted: Callable[[], Path], tmp: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    dest = _copy_model(fitted, tmp)
    meta = json.loads((dest / "model.json").read_text())
    edit(meta)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


def _resume_onto(fitted: Callable[[], Path], tmp: Path, checkpoint: Callable[[Path], None]) -> list[str]:
    """An interrupted run of the fitted run's own config whose checkpoint is replaced by ``checkpoint(path)``."""
    run = fitted()
    partial = tmp / ".out.partial"
    (partial / "checkpoint").mkdir(parents=True)
    shutil.copy(run / "config.yaml", partial / "config.yaml")
    checkpoint(partial / "checkpoint" / "checkpoint.pt")
    return ["fit", str(run / "config.yaml"), "--out", str(tmp / "out"), "--resume"]


def _api_fit(x: Any, y: Any, **params: Any) -> Callable[[], Any]:
    defaults = {"backbone": "mlp:4", "epochs": 1, "progress": False}
    return lambda: TransferClassifier(**{**defaults, **params}).fit(x, y)


def _nothing_unpickled(tmp: Path) -> None:
    assert not (tmp / "pwned").exists(), "a pickle handed over by the user was executed"


_RNG = np.random.default_rng(0)
_X4 = _RNG.normal(size=(40, 4)).astype(np.float32)
_Y4 = np.arange(40) % 2


CASES: list[Case] = [
    # ---- config files --------------------------------------------------------------------------------------
    Case("yaml-binary-garbage", lambda t, f: _cfg(t, bytes(range(256)) * 4), ("c.yaml",)),
    Case("yaml-empty", lambda t, f: _cfg(t, ""), ("empty",)),
    Case("yaml-only-comments", lambda t, f: _cfg(t, "# nothing here\n"), ("empty",)),
    Case("yaml-syntax-error", lambda t, f: _cfg(t, "train: [epochs: 2\n"), ("c.yaml",)),
    Case("yaml-top-level-list", lambda t, f: _cfg(t, "- 1\n- 2\n"), ("c.yaml",)),
    Case("yaml-top-level-scalar", lambda t, f: _cfg(t, "hello\n"), ("c.yaml",)),
    Case("config-is-a-folder", lambda t, f: ["fit", str(t), "--out", str(t / "out")]),
    Case("config-missing", lambda t, f: ["fit", str(t / "nope.yaml"), "--out", str(t / "out")], ("nope.yaml",)),
    Case("config-unknown-key", lambda t, f: _cfg(t, "train:\n  epocs: 2\n"), ("train.epocs", "train.epochs")),
    Case("config-unknown-section", lambda t, f: _cfg(t, "trian:\n  epochs: 2\n"), ("trian",)),
    Case("config-section-not-a-mapping", lambda t, f: _cfg(t, "train: 3\n"), ("train",)),
    Case("config-wrong-type", lambda t, f: _cfg(t, "train:\n  epochs: many\n"), ("train.epochs",)),
    Case("config-list-for-scalar", lambda t, f: _cfg(t, "train:\n  lr: [1, 2]\n"), ("train.lr",)),
    Case("set-without-equals", lambda t, f: _fit(t, "--set", "train.epochs"), ("train.epochs",)),
    Case("set-wrong-type", lambda t, f: _fit(t, "--set", "train.lr=fast"), ("train.lr",)),
    Case("set-unknown-nested-key", lambda t, f: _fit(t, "--set", "train.optim.beta=1"), ("train.optim",)),
    Case("negative-epochs", lambda t, f: _fit(t, "--set", "train.epochs=-1"), ("epochs",)),
    Case("zero-batch-size", lambda t, f: _fit(t, "--set", "train.batch_size=0"), ("batch_size",)),
    Case("negative-lr", lambda t, f: _fit(t, "--set", "train.lr=-0.1"), ("lr",)),
    # ---- names: method, backbone, method_params, data ---------------------------------------------------------
    Case("method-misspelled", lambda t, f: _fit(t, "--method", "finetun"), ("finetune",)),
    Case("backbone-misspelled", lambda t, f: _fit(t, "--backbone", "mobilenet_v2.imagenett"),
         ("mobilenet_v2.imagenet",)),
    Case("method-params-unknown-key", lambda t, f: _fit(t, "--method", "l2-sp", "--set", "model.method_params.alhpa=1"),
         ("alhpa", "alpha")),
    Case("method-params-out-of-range", lambda t, f: _fit(t, "--method", "l2-sp", "--set",
                                                         "model.method_params.alpha=-1"), ("alpha",)),
    Case("data-name-misspelled", lambda t, f: ["fit", "--data", "animal-mnst", "--out", str(t / "out")],
         ("animal-mnist",)),
    Case("data-csv-missing", lambda t, f: ["fit", "--data", str(t / "reviews.csv"), "--out", str(t / "out")],
         ("reviews.csv", "not exist")),
    Case("data-folder-missing", lambda t, f: ["fit", "--data", str(t / "photos") + "/", "--out", str(t / "out")],
         ("photos",)),
    # ---- data files ------------------------------------------------------------------------------------------
    Case("image-folder-empty-class", lambda t, f: _fit(t, data=_with_empty_class(t)), ("empty",)),
    Case("image-folder-one-class", lambda t, f: _fit(t, data=image_folder(t / "one", classes=("only",))), ("class",)),
    Case("image-folder-no-images", lambda t, f: _fit(t, data=_text_files_only(t))),
    Case("csv-no-label-column", lambda t, f: _csv_fit(t, "text,sentiment\ngood film,pos\nbad film,neg\n"), ("label",)),
    Case("csv-empty", lambda t, f: _csv_fit(t, "")),
    Case("csv-header-only", lambda t, f: _csv_fit(t, "text,label\n")),
    Case("jsonl-bad-line", lambda t, f: _csv_fit(t, '{"text": "a", "label": "x"}\nnot json\n', suffix=".jsonl")),
    # ---- weights files (all detected before a run folder exists) --------------------------------------------------
    Case("weights-pickle", lambda t, f: _fit(t, "--set", f"model.weights={write_pickle(t / 'w.pt', t / 'pwned')}"),
         extra_check=_nothing_unpickled),
    Case("weights-wrong-shape", lambda t, f: _fit(t, "--set", f"model.weights={_wrong_shape(t)}"), ("shape",)),
    Case("weights-wrong-keys", lambda t, f: _fit(t, "--set", f"model.weights={_wrong_keys(t)}")),
    Case("weights-truncated", lambda t, f: _fit(t, "--set", f"model.weights={_truncated_weights(t)}")),
    Case("weights-missing-file", lambda t, f: _fit(t, "--set", f"model.weights={t / 'none.safetensors'}"),
         ("none.safetensors",)),
    Case("weights-not-a-weights-file", lambda t, f: _fit(t, "--set", f"model.weights={_text_file(t, 'w.pth')}")),
    # ---- run folders -----------------------------------------------------------------------------------------
    Case("out-exists", lambda t, f: (t / "out").mkdir() or _fit(t), ("--overwrite",), absent=()),
    Case("out-below-a-file", lambda t, f: _fit(t, "--set", f"out={_text_file(t, 'afile')}/run"), ("afile",)),
    Case("out-name-too-long", lambda t, f: _fit(t, "--set", f"out={t / ('r' * 300)}")),
    Case("resume-nothing", lambda t, f: _fit(t, "--resume"), ("resume",)),
    Case("resume-onto-pickle-checkpoint", lambda t, f: _resume_onto(f, t, lambda p: write_pickle(p, t / "pwned")),
         ("checkpoint",), kept=(".out.partial",), extra_check=_nothing_unpickled),
    Case("resume-onto-truncated-checkpoint", lambda t, f: _resume_onto(f, t, lambda p: p.write_bytes(b"PK\x03\x04")),
         ("checkpoint",), kept=(".out.partial",)),
    Case("monitor-needs-target", lambda t, f: _fit(t, "--set", "train.monitor=snd"), ("target",)),
    # ---- predict / evaluate ----------------------------------------------------------------------------------
    Case("predict-top-k-negative", lambda t, f: _predict(f, t, "--top-k", "-1", "--out", str(t / "out.csv")),
         ("top-k",), absent=("out.csv",)),
    Case("predict-top-k-zero", lambda t, f: _predict(f, t, "--top-k", "0", "--out", str(t / "out.csv")),
         ("top-k",), absent=("out.csv",)),
    Case("predict-out-is-a-folder", lambda t, f: _predict(f, t, "--out", str(t)), ("folder",), absent=()),
    Case("predict-out-below-a-file", lambda t, f: _predict(f, t, "--out", f"{_text_file(t, 'afile')}/p.csv"),
         ("afile",)),
    Case("predict-out-name-too-long", lambda t, f: _predict(f, t, "--out", str(t / ("p" * 300 + ".csv")))),
    Case("predict-missing-path", lambda t, f: _predict(f, t, "--out", str(t / "out.csv"), paths=[str(t / "gone.png")]),
         ("gone.png",), absent=("out.csv",)),
    Case("predict-empty-folder", lambda t, f: _predict(f, t, "--out", str(t / "out.csv"), paths=[_empty_dir(t)]),
         absent=("out.csv",)),
    Case("predict-missing-run", lambda t, f: ["predict", str(t / "norun"), str(t), "--out", str(t / "out.csv")],
         ("norun",), absent=("out.csv",)),
    Case("evaluate-missing-run", lambda t, f: ["evaluate", str(t / "norun"), "mnist"], ("norun",)),
    Case("evaluate-folder-is-not-a-run", lambda t, f: ["evaluate", str(t), "mnist"]),
    Case("evaluate-out-below-a-file", lambda t, f: ["evaluate", str(f()), str(image_folder(t / "ev")), "--split",
                                                    "train", "--out", f"{_text_file(t, 'afile')}/m.json"], ("afile",)),
    Case("evaluate-data-missing", lambda t, f: ["evaluate", str(f()), str(t / "nodata.csv")], ("nodata.csv",)),
    Case("evaluate-split-absent", lambda t, f: ["evaluate", str(f()), _csv_file(t), "--split", "val"]),
    # ---- model folders (what load() reads) ------------------------------------------------------------------
    Case("model-json-missing-head", lambda t, f: _predict(
        lambda: _edit_model_json(f, t, lambda m: m.pop("head")), t, "--out", str(t / "out.csv")), ("model.json",),
        absent=("out.csv",)),
    Case("model-json-garbage", lambda t, f: _predict(lambda: _garbage_json(f, t), t, "--out", str(t / "out.csv")),
         ("model.json",), absent=("out.csv",)),
    Case("model-safetensors-truncated", lambda t, f: _predict(lambda: _truncate_model(f, t), t, "--out",
                                                              str(t / "out.csv")), absent=("out.csv",)),
    Case("model-json-names-code", lambda t, f: _predict(lambda: _factory_model(f, t), t, "--out", str(t / "out.csv")),
         ("trust",), absent=("out.csv",)),
    # ---- other commands ------------------------------------------------------------------------------------
    Case("compare-zero-seeds", lambda t, f: ["compare", _da_config(t), "--methods", "source-only", "--seeds", "0"],
         ("seeds",)),
    Case("compare-unknown-method", lambda t, f: ["compare", _da_config(t), "--methods", "dan,dnn", "--seeds", "1"],
         ("dnn",)),
    Case("rank-unknown-backbone", lambda t, f: ["rank", "--data", str(image_folder(t / "r")), "--backbones",
                                                "mobilenet_v2.imagenett"], ("mobilenet_v2.imagenet",)),
    Case("rank-negative-samples", lambda t, f: ["rank", "--data", str(image_folder(t / "r")), "--backbones",
                                                "timm:test_resnet~random", "--max-samples", "-5"], ("max-samples",)),
    # ---- Python API ------------------------------------------------------------------------------------------
    Case("api-unknown-hyperparameter", lambda t, f: lambda: TransferClassifier(epocs=3), ("epocs",)),
    Case("api-negative-epochs", lambda t, f: lambda: TransferClassifier(epochs=-1), ("epochs",)),
    Case("api-float-regression-labels", lambda t, f: _api_fit(_X4, _RNG.normal(size=40))),
    Case("api-nan-label", lambda t, f: _api_fit(_X4, np.where(_Y4 == 0, np.nan, 1.0))),
    Case("api-none-label", lambda t, f: _api_fit(_X4, [None if i == 3 else "a" if i % 2 else "b" for i in range(40)])),
    Case("api-length-mismatch", lambda t, f: _api_fit(_X4, _Y4[:30])),
    Case("api-empty-array", lambda t, f: _api_fit(np.zeros((0, 4), np.float32), np.zeros(0, int))),
    Case("api-5d-array", lambda t, f: _api_fit(np.zeros((40, 2, 3, 4, 5), np.float32), _Y4)),
    Case("api-unlabelled-fit", lambda t, f: _api_fit(_X4, None)),
    Case("api-load-missing", lambda t, f: lambda: TransferClassifier.load(t / "nothing"), ("nothing",)),
    Case("api-load-names-code", lambda t, f: lambda: TransferClassifier.load(_factory_model(f, t)), ("trust",)),
    Case("api-predict-unfitted", lambda t, f: lambda: TransferClassifier().predict(_X4), ("fit",)),
    Case("api-evaluate-unlabelled", lambda t, f: lambda: TransferClassifier.load(f()).evaluate(
        [str(p) for p in sorted(image_folder(t / "ev").rglob("*.png"))])),
    Case("api-predict-text-on-image-model", lambda t, f: lambda: TransferClassifier.load(f()).predict(
        ["a review", "another review"])),
]


# --- material for the cases -------------------------------------------------------------------------------------
def _with_empty_class(t: Path) -> Path:
    root = image_folder(t / "imgs")
    (root / "empty").mkdir()
    return root


def _text_files_only(t: Path) -> Path:
    for c in ("a", "b"):
        (t / "txt" / c).mkdir(parents=True)
        (t / "txt" / c / "x.txt").write_text("no image")
    return t / "txt"


def _csv_fit(t: Path, text: str, suffix: str = ".csv") -> list[str]:
    p = t / f"t{suffix}"
    p.write_text(text)
    return ["fit", "--data", str(p), "--backbone", "bow-hash", "--set", "train.progress=false", "--out", str(t / "out")]


def _csv_file(t: Path) -> str:
    p = t / "d.csv"
    p.write_text("text,label\n" + "".join(f"film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(10)))
    return str(p)


def _text_file(t: Path, name: str) -> Path:
    p = t / name
    p.write_text("just text")
    return p


def _empty_dir(t: Path) -> str:
    (t / "empty").mkdir()
    return str(t / "empty")


def _wrong_shape(t: Path) -> Path:
    """Every tensor of the tiny backbone, one of them the wrong shape."""
    import timm

    state = {k: v.clone() for k, v in timm.create_model("test_resnet", num_classes=0).state_dict().items()}
    state["conv1.0.weight"] = state["conv1.0.weight"][:, :1].contiguous()
    return tiny_weights(t / "w.safetensors", state)


def _wrong_keys(t: Path) -> Path:
    import torch

    return tiny_weights(t / "w.safetensors", {"no.such.layer.weight": torch.zeros(2, 2)})


def _truncated_weights(t: Path) -> Path:
    import torch

    p = tiny_weights(t / "w.safetensors", {"conv1.weight": torch.zeros(64, 3, 7, 7)})
    p.write_bytes(p.read_bytes()[:200])
    return p


def _garbage_json(fitted: Callable[[], Path], t: Path) -> Path:
    dest = _copy_model(fitted, t)
    (dest / "model.json").write_bytes(b"\x00\xff{not json")
    return dest


def _truncate_model(fitted: Callable[[], Path], t: Path) -> Path:
    dest = _copy_model(fitted, t)
    w = dest / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    return dest


def _factory_model(fitted: Callable[[], Path], t: Path) -> Path:
    def edit(meta: dict[str, Any]) -> None:
        meta["backbone"] = {"type": "factory", "target": "tempfile:mkdtemp", "inner": meta["backbone"]}

    return _edit_model_json(fitted, t, edit)


def _da_config(t: Path) -> str:
    p = t / "da.yaml"
    p.write_text("data:\n  name: skada-covariate-source\ntarget:\n  name: skada-covariate-target\n"
                 "model:\n  backbone: 'mlp:2-8'\ntrain:\n  epochs: 1\n  progress: false\n"
                 f"out: {t / 'out'}\n")
    return str(p)


# --- the contract --------------------------------------------------------------------------------------------
_TWO_SENTENCES = re.compile(r"[.!?]\s+[A-Z]")


def _one_sentence(message: str) -> None:
    assert message.strip(), "an empty error message"
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert "Traceback" not in message
    assert not _TWO_SENTENCES.search(message), f"more than one sentence: {message!r}"


def _left_behind(tmp: Path, absent: tuple[str, ...], kept: tuple[str, ...] = ()) -> list[str]:
    partial = [str(p) for p in tmp.rglob("*.partial") if p.relative_to(tmp).as_posix() not in kept]
    return partial + [name for name in absent if (tmp / name).exists()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
                   ) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fitted_run = lambda: request.getfixturevalue("fitted")  # noqa: E731  (fitted only when a case needs it)
    action = case.make(work, fitted_run)
    capsys.readouterr()
    if isinstance(action, list):
        try:
            rc = main(action)
        except SystemExit as exit_:  # argparse's own refusals exit from inside parse_args
            rc = exit_.code
        err = capsys.readouterr().err
        assert rc == 2, (rc, err)
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("transferkit: error:")]
        assert len(errors) == 1, err
        message = errors[0].removeprefix("transferkit: error:").strip()
    else:
        with pytest.raises(TransferkitError) as info:
            action()
        message = str(info.value)
    _one_sentence(message)
    for fragment in case.fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    assert not _left_behind(work, case.absent, case.kept), _left_behind(work, case.absent, case.kept)
    for name in case.kept:
        assert (work / name).exists(), f"the command removed what the user had: {name}"
    if case.extra_check is not None:
        case.extra_check(work)


def test_there_are_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
