"""The compress and export commands end to end on real weights and data, and the exported folder served.

MobileNetV2 (ImageNet) fine-tuned on 1,000 MNIST images at 32 px, pruned by half (every layer's channels), its
batch-norm statistics re-estimated, recovered for 3 epochs with the unpruned model as the ``kd`` teacher (online)
plus labels, quantised to static int8 and exported. The recovered model must be far above the pruned one (pruning
half the channels leaves it near chance), its fp32 export must match PyTorch within the issue's 1e-4, its int8
export must agree with it on most test images, a broken export of either must be refused, and ``transferkit serve``
on the int8 folder must answer what ONNX Runtime gives on the same files. (The must-show figures on Animal-MNIST at
64 px are benchmarks/compress.py's.)
"""

from __future__ import annotations

import hashlib
import json

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from transferkit.cli import main
from transferkit.compress import parity
from transferkit.compress.measure import loader_batches
from transferkit.compress.onnx_model import input_names_of, onnx_logits, session
from transferkit.data import load_data, resolve_data_arg
from transferkit.errors import RunError
from transferkit.model import load_model

pytestmark = pytest.mark.slow

# floors from this fixture at seeds 0, 1, 2 (fit --set train.seed=N, compress --seed N), with a margin: original
# 0.908 / 0.928 / 0.865, pruned 0.123 / 0.148 / 0.113, recovered 0.865 / 0.848 / 0.868, int8 top-1 agreement with the
# recovered model 0.950 / 0.965 / 0.970 (every layer int8, before the float first conv and classifier became the
# default; the flow passed again with them), (|int8 - recovered| accuracy <= 0.013), fp32 export max abs diff 2.6e-5 /
# 2.1e-5 / 3.8e-5 at largest |logit| 18-25
ORIGINAL_FLOOR = 0.8
RECOVERED_FLOOR = 0.75
INT8_AGREEMENT_FLOOR = 0.92


def _break(path) -> None:  # noqa: ANN001
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
def compressed(tmp_path_factory):  # noqa: ANN001, ANN201
    """The fit and the compression on ONE torch thread, as the floors above were measured: the thread count changes
    the order of float sums, hence the trained weights, and int8 agreement is sensitive to them (on 2 threads seed 0's
    recovered model agreed with its int8 export on only 88.2% of the 400 images, and compress refused the export: the
    fragility issue 14's note records, not a defect of this flow)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _compress(tmp_path_factory.mktemp("compress"))
    finally:
        torch.set_num_threads(threads)


def _compress(root):  # noqa: ANN001, ANN202
    assert main(["fit", "--data", "mnist", "--backbone", "mobilenet_v2.imagenet", "--method", "finetune",
                 "--out", str(root / "run"), "--set", "model.image_size=32", "--set", "data.train_size=1000",
                 "--set", "train.epochs=2", "--set", "train.batch_size=32", "--set", "train.progress=false"]) == 0
    # one step, 3 epochs: the recipe its floors were measured with (the default is now 2 steps + 5 epochs)
    assert main(["compress", str(root / "run"), "--prune", "0.5", "--prune-steps", "1", "--recover-epochs", "3",
                 "--lr", "3e-3", "--int8", "--test-samples", "400", "--repeats", "2", "--out", str(root / "comp")]) == 0
    return root


def test_compress_table_pruning_recovery_and_int8(compressed) -> None:  # noqa: ANN001
    comp = compressed / "comp"
    for name in ("compression.json", "compression.md", "accuracy_vs_latency.png", "pruned/model.json",
                 "recovered/metrics.json", "export/model.onnx", "export/export.json"):
        assert (comp / name).is_file(), name
    summary = json.loads((comp / "compression.json").read_text())
    rows = {(r["stage"], r["engine"]): r for r in summary["rows"]}
    assert list(rows) == [("original", "torch"), ("original", "onnx-fp32"), ("pruned", "torch"),
                          ("recovered", "torch"), ("recovered", "onnx-fp32"), ("int8", "onnx-int8")]
    orig, pruned, rec, q = (rows[k] for k in [("original", "torch"), ("pruned", "torch"), ("recovered", "torch"),
                                              ("int8", "onnx-int8")])
    assert pruned["params"] < 0.45 * orig["params"] and pruned["macs"] < 0.45 * orig["macs"]
    assert q["size_mb"] < 0.15 * orig["size_mb"]  # int8 and half the channels: a file about 10x smaller
    assert abs(rows[("original", "onnx-fp32")]["accuracy"] - orig["accuracy"]) < 1e-3
    assert orig["accuracy"] > ORIGINAL_FLOOR
    # recovery recovers: pruning leaves the model near chance, 3 epochs of kd bring it most of the way back
    assert pruned["accuracy"] < orig["accuracy"] - 0.2
    assert rec["accuracy"] > RECOVERED_FLOOR and rec["accuracy"] > pruned["accuracy"] + 0.5
    # int8 of the RECOVERED model: top-1 agreement reported and above a floor, accuracy close to fp32's
    agreement = summary["parity"]["int8"]["top1_agreement"]
    assert agreement >= INT8_AGREEMENT_FLOOR, agreement
    assert abs(q["accuracy"] - rec["accuracy"]) < 0.05
    assert summary["settings"]["recover_method"] == "kd"
    meta = json.loads((comp / "export" / "export.json").read_text())
    assert meta["int8"] is True and meta["quantization"]["calibration"] == "minmax"
    assert meta["classes"] == load_model(compressed / "run").classes
    # the pruned folder is a model folder that load_model rebuilds (channel counts as data)
    assert load_model(comp / "pruned").pruned is not None
    assert "| int8 | onnx-int8 |" in (comp / "compression.md").read_text()



def test_export_command_fp32_and_int8_parity_and_broken_exports_refused(compressed, capsys) -> None:  # noqa: ANN001
    comp = compressed / "comp"
    assert main(["export", str(comp / "recovered"), "--format", "onnx", "--out", str(compressed / "fp32")]) == 0
    meta = json.loads((compressed / "fp32" / "export.json").read_text())
    fp32 = meta["parity"]["fp32"]
    assert meta["int8"] is False and fp32["max_abs_diff"] <= 1e-4, fp32  # the bar, absolute
    assert fp32["top1_agreement"] == 1.0
    assert len(meta["source"]["model_sha256"]) == 64
    model = load_model(comp / "recovered")
    splits = load_data(resolve_data_arg("mnist"))
    batches = loader_batches(model, splits.test, limit=256)
    for folder, int8 in ((compressed / "fp32", False), (comp / "export", True)):
        path = folder / "model.onnx"
        names = input_names_of(path)
        assert parity(model, path, names, batches, int8=int8)["top1_agreement"] >= 0.9
        broken = folder.parent / f"broken-{folder.name}.onnx"
        broken.write_bytes(path.read_bytes())
        _break(broken)
        with pytest.raises(RunError, match="does not match|agrees with the PyTorch model on only"):
            parity(model, broken, names, batches, int8=int8)
    # refusals are one sentence, exit status 2, nothing written
    capsys.readouterr()
    assert main(["export", str(compressed / "nowhere"), "--out", str(compressed / "x")]) == 2
    assert "is not a saved transferkit model" in capsys.readouterr().err
    assert not (compressed / "x").exists()


def test_the_int8_export_folder_is_served_with_onnx_runtimes_predictions(compressed) -> None:  # noqa: ANN001
    """``transferkit serve`` on the folder ``compress --int8`` wrote: same classes as ONNX Runtime on the same PNGs."""
    from PIL import Image

    from transferkit.serving.process import local_server

    export = compressed / "comp" / "export"
    splits = load_data(resolve_data_arg("mnist"))
    files = []
    for i in range(8):
        path = compressed / f"digit{i}.png"
        Image.fromarray(splits.test.inputs[i]).save(path)
        files.append(path)
    model = load_model(compressed / "comp" / "recovered")
    sub = splits.test.subset(np.arange(8))
    batches = loader_batches(model, sub, batch_size=8)
    names = input_names_of(export / "model.onnx")
    logits = onnx_logits(session(export / "model.onnx"), names, batches)
    z = logits - logits.max(1, keepdims=True)
    expected = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    classes = json.loads((export / "export.json").read_text())["classes"]
    with local_server(export, "--top-k", "3") as server, httpx.Client(base_url=server.url, timeout=60) as client:
        meta = client.get("/metadata").json()
        assert meta["engine"] == "onnxruntime" and meta["classes"] == classes
        assert meta["model_sha256"] == hashlib.sha256((export / "model.onnx").read_bytes()).hexdigest()
        r = client.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files])
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
    assert [p["input"] for p in preds] == [p.name for p in files]
    assert [p["label"] for p in preds] == [classes[i] for i in expected.argmax(1)]
    for p, row in zip(preds, expected, strict=True):
        np.testing.assert_allclose(p["top_k"][0]["probability"], row.max(), atol=1e-4)
    assert len({p["label"] for p in preds}) > 1  # a model that tells the digits apart
