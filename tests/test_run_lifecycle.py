"""The run folder's life cycle: nothing half-written on a user error, divergence, locking, umask, unwritable --out.

Most runs here are in-process :func:`run_fit` calls on a tiny text table with the parameter-free ``bow-hash``
backbone (a few seconds each); mistakes that must be caught before training use a tiny image folder with
``timm:test_resnet`` (random weights) so that weights files of the wrong shape exist. Concurrency is tested with
real processes: one refused while this process holds the lock, and one two-process race.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.cli_helpers import ROOT, assert_user_error, run_cli
from transferkit.app.fit import run_fit
from transferkit.app.runs import RunFolder
from transferkit.config import RunConfig, apply_overrides
from transferkit.errors import RunError, TransferkitError
from transferkit.methods import register
from transferkit.methods.base import Method, StepOutput

TEXT_RUN = ["model.backbone=bow-hash", "train.epochs=3", "train.progress=false", "train.batch_size=16",
            "train.schedule=constant", "train.warmup_fraction=0.0"]
IMAGE_RUN = ["model.backbone=timm:test_resnet", "model.pretrained=false", "model.image_size=32",
             "train.progress=false", "train.epochs=1", "train.batch_size=6"]


# --- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 two-class snippets that bow-hash separates at once."""
    words = {"pos": ["good", "great", "fine", "lovely"], "neg": ["bad", "awful", "poor", "dull"]}
    rng = np.random.default_rng(0)
    rows = ["text,label"]
    for i in range(80):
        label = ("pos", "neg")[i % 2]
        rows.append(f"{' '.join(rng.choice(words[label], 5))},{label}")
    path = tmp_path_factory.mktemp("data") / "snippets.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, base in (("dark", 40), ("light", 200)):
        (root / name).mkdir()
        for i in range(12):
            pixels = (base + rng.integers(-30, 30, (8, 8, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _cfg(data: Path, out: Path, base: list[str], *more: str) -> RunConfig:
    return apply_overrides(RunConfig(), [f"data.path={data}", f"out={out}", *base, *more])


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """An empty folder the runs go into; each test asserts what it holds afterwards."""
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


# --- 1. nothing half-written on a user error -----------------------------------------------------------------
@pytest.fixture(scope="module")
def weights_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A weights file for each way ``model.weights`` can be wrong, for the ``timm:test_resnet`` backbone."""
    from safetensors.torch import save_file

    from transferkit.backbones import build_backbone

    folder = tmp_path_factory.mktemp("weights")
    state = build_backbone("timm:test_resnet", pretrained=False).state_dict()
    files = {"missing": folder / "absent.safetensors", "pickle": folder / "pickled.pt",
             "shapes": folder / "shapes.safetensors", "keys": folder / "keys.safetensors",
             "truncated": folder / "truncated.safetensors"}
    torch.save({"config": argparse.Namespace(lr=1)}, files["pickle"])  # weights_only refuses it
    save_file({k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.ndim else v for k, v in state.items()},
              str(files["shapes"]))
    save_file({"some.other.layer": torch.zeros(3)}, str(files["keys"]))
    good = folder / "good.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(good))
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return files


#: Mistakes that used to be found only after the run folder existed: (overrides, a fragment of the message).
PRE_RUN_MISTAKES = {
    "method": (["model.method=finetun"], "finetune"),
    "backbone": (["model.backbone=timm:test_resnett"], "test_resnet"),
    "method_params": (["model.method=l2-sp", "model.method_params={alpah: 0.1}"], "alpah"),
    **{f"weights_{kind}": ([f"model.weights=@{kind}"], kind) for kind in
       ("missing", "pickle", "shapes", "keys", "truncated")},
}


@pytest.mark.parametrize("case", list(PRE_RUN_MISTAKES))
def test_a_mistake_found_while_preparing_leaves_nothing_and_the_corrected_run_is_not_refused(
        case, runs, image_folder, weights_files):
    overrides, fragment = PRE_RUN_MISTAKES[case]
    kind = case.removeprefix("weights_")
    overrides = [o.replace(f"@{kind}", str(weights_files[kind])) if kind in weights_files else o for o in overrides]
    fragment = str(weights_files.get(fragment, fragment))  # a weights error names the file
    out = runs / "sub" / "run"  # a parent that does not exist yet must not be left behind either
    with pytest.raises(TransferkitError) as err:
        run_fit(_cfg(image_folder, out, IMAGE_RUN, *overrides))
    assert fragment in str(err.value)
    assert _listing(runs) == []
    RunFolder(out).check(_cfg(image_folder, out, IMAGE_RUN).to_dict())  # the corrected command is not refused


def test_a_user_error_after_the_folder_exists_removes_it(runs, text_csv):
    """lwf finds out only in its set-up (inside training) that bow-hash has no source classifier."""
    with pytest.raises(TransferkitError, match="lwf"):
        run_fit(_cfg(text_csv, runs / "run", TEXT_RUN, "model.method=lwf"))
    assert _listing(runs) == []


@register
class _CrashesInTraining(Method):
    """Test-only: a bug (not a user error) in the first step."""

    name = "test-crashes"
    summary = "test only: raises RuntimeError in the first step"

    def training_step(self, model, batch):  # noqa: ANN001, ANN201
        raise RuntimeError("a bug in a method")


def test_a_crash_keeps_the_partial_folder_and_releases_the_lock(runs, text_csv):
    with pytest.raises(RuntimeError, match="a bug"):
        run_fit(_cfg(text_csv, runs / "run", TEXT_RUN, "model.method=test-crashes"))
    assert (runs / ".run.partial" / "config.yaml").is_file()
    assert not (runs / "run").exists() and not (runs / ".run.lock").exists()
    result = run_fit(_cfg(text_csv, runs / "run", TEXT_RUN, "overwrite=true"))  # not locked, --overwrite restarts
    assert result.out == runs / "run" and [p.name for p in runs.iterdir()] == ["run"]


def test_compare_leaves_nothing_on_a_user_error(runs, text_csv):
    from transferkit.app.compare import run_compare

    cfg = _cfg(text_csv, runs / "cmp", TEXT_RUN, "model.backbone=bow-hashh", f"target.path={text_csv}")
    with pytest.raises(TransferkitError, match="bow-hash"):
        run_compare(cfg, ["source-only"], [0], embedding="none", progress=False)
    cfg = _cfg(text_csv, runs / "cmp", TEXT_RUN, "model.method_params={nope: 1}", f"target.path={text_csv}")
    with pytest.raises(TransferkitError, match="nope"):
        run_compare(cfg, ["source-only"], [0], embedding="none", progress=False)
    assert _listing(runs) == []


# --- 2./3. divergence, resuming with a lower learning rate, unreadable checkpoints --------------------------------
@register
class _DivergesAtEpoch2(Method):
    """Test-only: fine-tuning whose loss turns infinite at the 3rd step of the 2nd epoch when train.lr > 0.05."""

    name = "test-diverges"
    summary = "test only: the loss becomes inf at epoch 2, step 3 unless train.lr <= 0.05"

    def on_step_start(self, step: int, total_steps: int) -> None:
        super().on_step_start(step, total_steps)
        self.step_now = step

    def training_step(self, model, batch):  # noqa: ANN001, ANN201
        out = super().training_step(model, batch)
        steps = -(-56 // self.train_config.batch_size)  # 56 training snippets
        if self.train_config.lr > 0.05 and self.step_now == steps + 2:
            return StepOutput(out.loss * float("inf"), out.logits)
        return out


def test_a_diverging_run_stops_with_one_sentence_and_resumes_with_a_lower_lr(runs, text_csv):
    out = runs / "run"
    partial, ckpt = runs / ".run.partial", runs / ".run.partial" / "checkpoint" / "checkpoint.pt"
    with pytest.raises(RunError) as err:
        run_fit(_cfg(text_csv, out, TEXT_RUN, "model.method=test-diverges", "train.lr=0.1"))
    msg = str(err.value)
    assert msg.startswith("Training diverged at epoch 2, step 3 of 4: the loss became inf with learning rate 1;")
    assert "lower train.lr (e.g. --set train.lr=0.01)" in msg and "last good epoch (1) with --resume" in msg
    assert msg.endswith("with --resume.") and "\n" not in msg
    assert not out.exists() and ckpt.is_file() and not (runs / ".run.lock").exists()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())

    changed = _cfg(text_csv, out, TEXT_RUN, "model.method=test-diverges", "train.lr=0.1", "train.batch_size=8")
    with pytest.raises(RunError, match=r"'train.batch_size' and only train.lr, train.grad_clip"):
        run_fit(changed, resume=True)

    good = ckpt.read_bytes()
    torch.save({"history": argparse.Namespace(a=1)}, ckpt)
    with pytest.raises(RunError, match=r"is not a plain tensor file and was not loaded; start the run again with "
                                       r"--overwrite\.$"):
        run_fit(_cfg(text_csv, out, TEXT_RUN, "model.method=test-diverges", "train.lr=0.01"), resume=True)
    ckpt.write_bytes(good[: len(good) // 3])
    with pytest.raises(RunError, match=r"cannot be read \(.*\) and was not loaded"):
        run_fit(_cfg(text_csv, out, TEXT_RUN, "model.method=test-diverges", "train.lr=0.01"), resume=True)
    assert ckpt.is_file()  # a checkpoint the user may still want is never removed by a refusal
    ckpt.write_bytes(good)

    result = run_fit(_cfg(text_csv, out, TEXT_RUN, "model.method=test-diverges", "train.lr=0.01"), resume=True)
    assert result.out == out and not partial.exists() and not (out / "checkpoint").exists()
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[0] == saved["history"][0]  # epoch 1 is the checkpoint's, not retrained
    assert history[1]["lr"] == pytest.approx(history[0]["lr"] / 10)  # the optimizer took the new train.lr
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 0.01
    assert {"metrics.json", "model.safetensors", "summary.json"} <= set(_listing(out))


def test_a_real_divergence_keeps_exactly_the_last_good_epoch(runs, text_csv):
    """train.lr=1e6 really diverges (here in epoch 2, found by the end-of-epoch look at the weights; another CPU's
    rounding may move it): the sentence names the epoch, and what is kept is the checkpoint of the epochs before."""
    import re

    with pytest.raises(RunError) as err:
        run_fit(_cfg(text_csv, runs / "run", TEXT_RUN, "train.lr=1e6"))
    msg = str(err.value)
    found = re.match(r"Training diverged (?:at|in) epoch (\d+)\b[^\n]* lower train\.lr \(e\.g\. --set "
                     r"train\.lr=100000\) and (train again|continue from the last good epoch \((\d+)\) with "
                     r"--resume)\.$", msg)
    assert found, msg
    epoch = int(found.group(1))
    ckpt = runs / ".run.partial" / "checkpoint" / "checkpoint.pt"
    if epoch == 1:
        assert found.group(2) == "train again" and _listing(runs) == []
    else:
        assert int(found.group(3)) == epoch - 1 and torch.load(ckpt, weights_only=True)["epoch"] == epoch - 1
        run_fit(_cfg(text_csv, runs / "run", TEXT_RUN, "train.lr=1e-3"), resume=True)
        assert [p.name for p in runs.iterdir()] == ["run"]


# --- 4. one run at a time per folder ------------------------------------------------------------------------
def test_the_cli_refuses_a_run_while_another_holds_the_folder(runs):
    from filelock import FileLock

    with FileLock(str(runs / ".run.lock"), timeout=0):
        proc = run_cli("fit", "--data", "mnist", "--out", str(runs / "run"))
    assert_user_error(proc, "Another run is writing to", str(runs / "run"))
    assert not (runs / "run").exists() and not (runs / ".run.partial").exists()


_RACER = """
import pathlib, sys, time
import transferkit.api, transferkit.app.fit, transferkit.train.loop  # imported before the start signal
from transferkit.cli import main
pathlib.Path(sys.argv[2]).touch()
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_two_runs_into_one_folder_end_with_one_complete_run_and_one_refusal(runs, text_csv, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_OFFLINE": "1"}
    go = tmp_path / "go"
    procs = []
    for seed in (1, 2):
        args = ["fit", "--data", str(text_csv), "--backbone", "bow-hash", "--out", str(runs / "run"), "--overwrite",
                "--set", "train.progress=false", "--set", f"train.seed={seed}", "--epochs", "2"]
        procs.append(subprocess.Popen([sys.executable, "-c", _RACER, str(go), str(tmp_path / f"ready{seed}"), *args],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{s}").exists() for s in (1, 2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a racer did not start"
        time.sleep(0.01)
    go.touch()
    done = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in done)
    assert codes == [0, 2], [(p.returncode, err[-2000:]) for p, _, err in done]
    (winner, w_out, _), = [d for d in done if d[0].returncode == 0]
    (_, _, l_err), = [d for d in done if d[0].returncode == 2]
    assert "transferkit: error: Another run is writing to" in l_err and "Traceback" not in l_err
    seed = 1 if winner is procs[0] else 2
    out = runs / "run"
    assert f"run folder: {out}" in w_out
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == seed
    assert json.loads((out / "model.json").read_text())["hyperparameters"]["seed"] == seed
    assert {"metrics.json", "history.json", "summary.json", "model.safetensors"} <= set(_listing(out))
    assert [p.name for p in runs.iterdir()] == ["run"]  # no partial, no lock, no .old


_HOLDER = """
import pathlib, sys, time
from transferkit.app.runs import RunFolder
folder = RunFolder(sys.argv[1])  # kept referenced: a collected lock is released
folder.acquire()
pathlib.Path(sys.argv[2]).touch()
time.sleep(600)
"""


def test_a_killed_run_does_not_keep_the_folder_locked(runs, tmp_path):
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT / "src"))}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(runs / "run"), str(ready)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the lock holder did not start"
            time.sleep(0.01)
        with pytest.raises(RunError, match="Another run is writing to"):
            RunFolder(runs / "run").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    folder = RunFolder(runs / "run")
    folder.acquire()  # the stale lock file is no obstacle once its holder is gone
    folder.release()
    assert _listing(runs) == []


# --- 5. files and folders follow the umask ------------------------------------------------------------------------
@pytest.fixture(params=[0o022, 0o077])
def umask(request: pytest.FixtureRequest):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_atomic_writes_follow_the_umask(umask, tmp_path):
    from safetensors.torch import save_file

    from transferkit.io import current_umask, write_text, write_with

    assert current_umask() == umask
    write_text(tmp_path / "a.txt", "x")
    write_with(tmp_path / "w.safetensors", lambda tmp: save_file({"w": torch.zeros(2)}, str(tmp)))  # its own 0600
    for name in ("a.txt", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_a_run_folder_follows_the_umask(umask, runs, text_csv):
    out = run_fit(_cfg(text_csv, runs / "run", TEXT_RUN, "train.epochs=1")).out
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes.pop("run") == 0o777 & ~umask
    assert len(modes) > 8 and set(modes.values()) == {0o666 & ~umask}, modes


# --- 6. an --out the OS refuses gets one sentence -------------------------------------------------------------
def test_an_out_below_a_file_is_refused_with_the_path_and_the_reason(runs, text_csv):
    (runs / "afile").write_text("x")
    with pytest.raises(RunError, match=r"^Cannot create the run folder '.*afile/run': '.*afile' is a file, not a "
                                       r"folder; choose another --out\.$"):
        run_fit(_cfg(text_csv, runs / "afile" / "run", TEXT_RUN))
    assert _listing(runs) == ["afile"]


def test_an_out_with_a_too_long_name_is_refused_with_the_reason(runs, text_csv):
    with pytest.raises(RunError, match=r"^Cannot create the run folder '.*': file name too long; choose another"):
        run_fit(_cfg(text_csv, runs / ("x" * 300), TEXT_RUN))
    assert _listing(runs) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_out_in_a_read_only_folder_is_refused_with_the_reason(runs, text_csv):
    locked = runs / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(RunError, match=r"^Cannot create the run folder '.*': permission denied; choose"):
            run_fit(_cfg(text_csv, locked / "run", TEXT_RUN))
    finally:
        locked.chmod(0o755)
