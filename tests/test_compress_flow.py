"""The compress and export commands end to end on real weights and data: MobileNetV2 (ImageNet) probed on MNIST at
32 px (300 training images), pruned by half, recovered for one epoch with the unpruned model as teacher, quantised to
int8. (The must-show figures on Animal-MNIST at 64 px are benchmarks/compress.py's.)"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from transferkit.cli import main
from transferkit.compress import parity
from transferkit.compress.measure import loader_batches
from transferkit.compress.onnx_model import input_names_of
from transferkit.data import load_data, resolve_data_arg
from transferkit.errors import RunError
from transferkit.model import load_model

pytestmark = pytest.mark.slow


def _break(path) -> None:
    """Overwrite the largest tensor of the ONNX graph at ``path`` with seeded noise of its own scale and type."""
    m = onnx.load(str(path))
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(init)
    rng = np.random.default_rng(0)
    if np.issubdtype(w.dtype, np.integer):
        noisy = rng.integers(-100, 100, size=w.shape).astype(w.dtype)
    else:
        noisy = (w + w.std() * rng.standard_normal(w.shape)).astype(w.dtype)
    init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    assert main(["fit", "--data", "mnist", "--backbone", "mobilenet_v2.imagenet", "--method", "finetune",
                 "--out", str(root / "run"), "--set", "model.image_size=32", "--set", "data.train_size=300",
                 "--set", "train.epochs=2", "--set", "train.progress=false"]) == 0
    assert main(["compress", str(root / "run"), "--prune", "0.5", "--recover-epochs", "1", "--lr", "1e-4", "--int8",
                 "--test-samples", "400", "--repeats", "2", "--out", str(root / "comp")]) == 0
    return root


def test_compress_table_pruning_recovery_and_int8(compressed):
    comp = compressed / "comp"
    for name in ("compression.json", "compression.md", "accuracy_vs_latency.png", "pruned/model.json",
                 "recovered/metrics.json", "export/model.onnx", "export/export.json"):
        assert (comp / name).is_file(), name
    summary = json.loads((comp / "compression.json").read_text())
    rows = {(r["stage"], r["engine"]): r for r in summary["rows"]}
    assert list(rows) == [("original", "torch"), ("original", "onnx-fp32"), ("pruned", "torch"),
                          ("recovered", "torch"), ("int8", "onnx-int8")]
    orig, pruned, rec, q = (rows[k] for k in [("original", "torch"), ("pruned", "torch"), ("recovered", "torch"),
                                              ("int8", "onnx-int8")])
    assert pruned["params"] < 0.45 * orig["params"] and pruned["macs"] < 0.45 * orig["macs"]
    assert q["size_mb"] < 0.15 * orig["size_mb"]  # int8 and half the channels: a file about 10x smaller
    assert abs(rows[("original", "onnx-fp32")]["accuracy"] - orig["accuracy"]) < 1e-3
    assert orig["accuracy"] > 0.5  # 10 classes; the probe on 300 images at 32 px reached 0.67
    # pruning half the channels without recovery leaves the model near chance (0.11 measured on Animal-MNIST); the
    # 5 recovery steps this test can afford do not bring it back, so no recovery gain is claimed here (see
    # BENCHMARKS.md "Compression")
    assert pruned["accuracy"] < orig["accuracy"]
    assert summary["parity"]["int8"]["top1_agreement"] >= 0.9
    assert abs(q["accuracy"] - rec["accuracy"]) < 0.05
    meta = json.loads((comp / "export" / "export.json").read_text())
    assert meta["int8"] is True and meta["quantization"]["calibration"] == "minmax"
    assert meta["classes"] == load_model(compressed / "run").classes
    # the pruned folder is a model folder that load_model rebuilds (channel counts as data)
    assert load_model(comp / "pruned").pruned is not None
    assert "| int8 | onnx-int8 |" in (comp / "compression.md").read_text()


def test_export_command_fp32_and_int8_parity_and_broken_exports_refused(compressed, capsys):
    comp = compressed / "comp"
    assert main(["export", str(comp / "recovered"), "--format", "onnx", "--out", str(compressed / "fp32")]) == 0
    meta = json.loads((compressed / "fp32" / "export.json").read_text())
    assert meta["int8"] is False and meta["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert len(meta["source"]["model_sha256"]) == 64
    model = load_model(comp / "recovered")
    splits = load_data(resolve_data_arg("mnist"))
    batches = loader_batches(model, splits.test, limit=256)
    for folder, int8 in ((compressed / "fp32", False), (comp / "export", True)):
        path = folder / "model.onnx"
        names = input_names_of(path)
        assert parity(model, path, names, batches, int8=int8)["top1_agreement"] >= 0.9
        _break(path)
        with pytest.raises(RunError, match="does not match|agrees with the PyTorch model on only"):
            parity(model, path, names, batches, int8=int8)
    # refusals are one sentence, exit status 2, nothing written
    capsys.readouterr()
    assert main(["export", str(compressed / "nowhere"), "--out", str(compressed / "x")]) == 2
    assert "is not a saved transferkit model" in capsys.readouterr().err
    assert not (compressed / "x").exists()
