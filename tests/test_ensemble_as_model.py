"""An ensemble folder is treated like any model: ``transferkit predict``, ``evaluate`` and ``serve``, and
``TransferClassifier.load`` (issue 15, item 1).

Real data, cheap members: three ``digits-cnn`` fine-tunes on MNIST (the DANN paper's small CNN with batch-norm) that
share the seed (so the initialisation and data order) and differ in learning rate, each a ``transferkit fit`` run
folder. They are combined by the CLI in-process (``vote``, ``average``, ``stack``, ``greedy-soup``); every folder is
then run through ``predict`` (image files on disk) and ``evaluate`` and must give what the Python API gives, and the
combination must be the one it claims (the mean of the members' probabilities, their vote, a soup whose weights and
batch-norm statistics are the members' mean). ``serve`` is started as a real uvicorn process on a stack folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.cli_helpers import main_in_process
from transferkit import TransferClassifier, load_data
from transferkit.config import DataConfig

DATA = "mnist"
LRS = (1e-3, 3e-3, 1e-2)
N_FILES = 16
#: every member and every ensemble is far above chance (10 %): with train.seed 0-2 for the fixture's runs (train
#: 1,500, 2 epochs) measured 0.90-0.94 on MNIST's test split and 0.81-0.94 on the first 16 test images (one image
#: is 6 points), so 0.75 leaves a margin
MIN_ACCURACY = 0.75


def _fit(root: Path, lr: float) -> Path:
    from transferkit.app.fit import run_fit
    from transferkit.config import RunConfig, apply_overrides

    sets = {"data.name": DATA, "data.train_size": 1500, "model.backbone": "digits-cnn", "model.method": "finetune",
            "train.epochs": 2, "train.lr": lr, "train.seed": 0, "train.progress": False,
            "out": str(root / f"lr{lr:g}")}
    return run_fit(apply_overrides(RunConfig(), list(sets.items()))).out


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    return [_fit(root, lr) for lr in LRS]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """The first MNIST test images written as PNG files (what ``predict`` and ``serve`` take), and their labels."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    test = load_data(DataConfig(name=DATA)).test
    files = []
    for i in range(N_FILES):
        path = root / f"digit{i:02d}.png"
        Image.fromarray(test.inputs[i]).save(path)
        files.append(path)
    return files, test.labels[:N_FILES]


@pytest.fixture(scope="module")
def folders(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One ensemble folder per way of combining, each built by ``transferkit ensemble`` (in-process)."""
    from transferkit.cli import main

    root = tmp_path_factory.mktemp("ensembles")
    out = {}
    for how in ("vote", "average", "stack", "greedy-soup", "uniform-soup"):
        out[how] = root / how
        assert main(["ensemble", *map(str, members), "--how", how, "--data", DATA, "--out", str(out[how])]) == 0
    out["uniform-soup-average"] = root / "uniform-average"
    assert main(["ensemble", *map(str, members), "--how", "uniform-soup", "--soup-bn", "average", "--data", DATA,
                 "--out", str(out["uniform-soup-average"])]) == 0
    return out


def _read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["vote", "average", "stack", "greedy-soup"])
def test_predict_and_evaluate_commands_treat_an_ensemble_folder_like_a_model(how, folders, members, image_files,
                                                                             tmp_path, capsys) -> None:
    folder = folders[how]
    files, labels = image_files
    est = TransferClassifier.load(folder)
    expected = est.predict_proba([str(p) for p in files])
    assert expected.shape == (N_FILES, 10)
    member_p = [TransferClassifier.load(m).predict_proba([str(p) for p in files]) for m in members]
    # the combination is the one the folder claims
    if how == "average":
        np.testing.assert_allclose(expected, np.mean(member_p, axis=0), rtol=1e-6, atol=1e-9)
    elif how == "vote":  # each member's top class is one vote; the probabilities are the shares of the votes
        votes = sum(np.eye(10)[p.argmax(1)] for p in member_p) / len(members)
        np.testing.assert_allclose(expected, votes, atol=1e-5)
        assert np.all(votes[np.arange(N_FILES), expected.argmax(1)] == votes.max(1))
    elif how == "greedy-soup":
        assert type(est) is TransferClassifier  # one model: one model's prediction cost

    # transferkit predict: the CSV holds the estimator's classes and probabilities
    csv_path = tmp_path / "pred.csv"
    proc = main_in_process(capsys, "predict", str(folder), *map(str, files), "--out", str(csv_path),
                           "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    rows = _read_predictions(csv_path)
    assert [Path(r["input"]).name for r in rows] == [p.name for p in files]
    assert [r["predicted"] for r in rows] == [est.classes_[i] for i in expected.argmax(1)]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], expected.max(1), rtol=1e-6)
    assert np.mean([r["predicted"] == est.classes_[y] for r, y in zip(rows, labels, strict=True)]) >= MIN_ACCURACY

    # transferkit evaluate: the metrics of the test split, as the API and the folder's own report give them
    metrics_path = tmp_path / "metrics.json"
    proc = main_in_process(capsys, "evaluate", str(folder), DATA, "--out", str(metrics_path))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(metrics_path.read_text())
    built = json.loads((folder / "ensemble.json").read_text())["evaluation"]
    assert metrics["accuracy"] == pytest.approx(built["ensemble"]["accuracy"])
    assert metrics["accuracy"] == pytest.approx(est.evaluate(load_data(DataConfig(name=DATA)).test)["accuracy"])
    assert metrics["accuracy"] >= MIN_ACCURACY and metrics["n"] == 1000


@pytest.mark.slow
def test_soups_of_fine_tunes_average_the_weights_and_handle_batch_norm_statistics_as_asked(folders, members) -> None:
    """``--soup-bn average``: every float tensor of the soup is the members' mean, batch-norm running statistics
    included (the paper's recipe). The default re-estimates those statistics on the training inputs: the same
    weights, and the statistics that ``finetune``'s recalibration computes for them; the greedy soup never loses
    validation accuracy to its best member."""
    from transferkit.app.ensemble import _bn_recalibration

    states = [load_file(str(m / "model.safetensors")) for m in members]
    averaged = load_file(str(folders["uniform-soup-average"] / "model.safetensors"))
    running = [k for k in averaged if k.endswith(("running_mean", "running_var"))]
    assert running, "digits-cnn has batch-norm layers"
    for k, v in averaged.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, sum(s[k].double() for s in states).div(len(states)).to(v.dtype))

    # the default: the same mean weights, the statistics re-estimated for them on the training inputs of --data
    # (MNIST's whole training split, of which finetune's recalibration takes a seeded 2,048)
    model = TransferClassifier.load(members[0]).model_
    model.load_state_dict(averaged)
    finish, note = _bn_recalibration(load_data(DataConfig(name=DATA)).train)
    finish(model)
    saved = load_file(str(folders["uniform-soup"] / "model.safetensors"))
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(saved[k], v, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(saved[k], averaged[k]) for k in running)
    report = json.loads((folders["uniform-soup"] / "ensemble.json").read_text())["evaluation"]
    assert report["batch_norm_statistics"] == note == "re-estimated on 2048 training inputs (the members' differ)"

    greedy = json.loads((folders["greedy-soup"] / "ensemble.json").read_text())["evaluation"]
    trace = greedy["greedy_trace"]
    assert max(t["soup_accuracy"] for t in trace if t["kept"]) >= max(t["member_accuracy"] for t in trace)
    assert type(TransferClassifier.load(folders["greedy-soup"])) is TransferClassifier  # one model's cost


@pytest.mark.slow
def test_serve_answers_predict_from_an_ensemble_folder(folders, image_files) -> None:
    import httpx

    from transferkit.serving.process import local_server

    folder = folders["stack"]
    files, _ = image_files
    est = TransferClassifier.load(folder)
    expected = est.predict_proba([str(p) for p in files])
    with local_server(folder, "--top-k", "3") as server, httpx.Client(base_url=server.url, timeout=60) as client:
        meta = client.get("/metadata").json()
        assert meta["classes"] == est.classes_ and meta["modality"] == "image"
        assert meta["ensemble"] == {"how": "stack", "members": est.names_}
        r = client.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files])
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
    assert [p["input"] for p in preds] == [p.name for p in files]
    for p, row in zip(preds, expected, strict=True):
        assert p["label"] == est.classes_[int(row.argmax())]
        order = np.argsort(-row, kind="stable")[:3]
        np.testing.assert_allclose([t["probability"] for t in p["top_k"]], row[order], atol=1e-4)
