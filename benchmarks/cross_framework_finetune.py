"""Cross-framework sources: parity of the converted modules, and an ONNX model fine-tuned as a backbone.

Sources that this project did not build in PyTorch, made here: a Keras 3 CNN (torch backend) trained on MNIST's 3,500
training digits, saved as ``.keras`` and exported by Keras to ONNX; and a scikit-learn MLPClassifier on sklearn's
digits converted by skl2onnx. For each, the parity check's largest absolute difference (fp32) against the source's
own runtime (ONNX Runtime; and Keras's ``predict`` for the ``.keras`` file), on a seeded batch and on a real one.

Then the must-show: ``onnx:<the Keras CNN's ONNX export>`` fine-tuned (method ``finetune``) on a small labelled
Animal-MNIST set (``--per-class`` labels per class) against the same architecture from random initialisation
(``pretrained=False``: each layer's ``reset_parameters()``, folded batch-norm set to the identity), same budget,
``--seeds`` seeds, test accuracy on the 1,943 test images, mean +- std. Both at lr 1e-3 and at the gentler 1e-4 that
the backbone recommends for batch-norm-folded networks.

    PYTHONPATH=src .venv/bin/python benchmarks/cross_framework_finetune.py [--seeds 3] [--per-class 30] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table, timer  # noqa: E402


def keras_cnn(folder: Path, epochs: int) -> tuple[Path, Path, float]:
    from transferkit.backbones.keras_backbone import import_keras
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    keras = import_keras()
    mnist = load_data(DataConfig(name="mnist"))
    x = (mnist.train.inputs.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, mnist.train.labels, epochs=epochs, batch_size=64, verbose=0)
    xt = (mnist.test.inputs.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    acc = float(model.evaluate(xt, mnist.test.labels, verbose=0)[1])
    model.save(str(folder / "cnn.keras"))
    model.export(str(folder / "cnn.onnx"), format="onnx", verbose=False)
    return folder / "cnn.keras", folder / "cnn.onnx", acc


def sklearn_mlp(folder: Path) -> tuple[Path, float]:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    clf = MLPClassifier((64, 32), max_iter=400, random_state=0).fit(x[:1200], y[:1200])
    path = folder / "mlp.onnx"
    path.write_bytes(to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17).SerializeToString())
    return path, float(clf.score(x[1200:], y[1200:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--source-epochs", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/cross_framework_finetune.json")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch

    from transferkit import TransferClassifier
    from transferkit.app.convert import real_batch
    from transferkit.backbones import build_backbone
    from transferkit.config import DataConfig
    from transferkit.data import load_data

    folder = Path(tempfile.mkdtemp(prefix="xframe-bench-"))
    with timer() as t_src:
        keras_file, onnx_file, keras_acc = keras_cnn(folder, args.source_epochs)
        mlp_file, mlp_acc = sklearn_mlp(folder)
    print(f"machine: {machine()}; sources built in {t_src[0]:.0f} s (Keras CNN MNIST test accuracy {keras_acc:.4f}, "
          f"sklearn MLP digits accuracy {mlp_acc:.4f})")

    parity_rows, parity = [], {}
    for name, data in ((f"keras:{keras_file}", "animal-mnist"), (f"onnx:{onnx_file}", "animal-mnist"),
                       (f"onnx:{mlp_file}", None)):
        bb = build_backbone(name)
        seeded = dict(bb.parity)
        real = bb.check_parity_on(real_batch(data, bb.preprocessing), f"'{data}'") if data else None
        label = name.split(":")[0] + ":" + Path(name.split(":", 1)[1]).name
        parity[label] = {"seeded": seeded, "real": real}
        for kind, p in (("seeded", seeded), (f"real ({data})", real)):
            if p is None:
                continue
            for ref, diff in p["checks"].items():
                parity_rows.append([label, ref, kind, p["n"], f"{diff:.2e}"])
    print("\n## Parity: largest absolute difference, converted module vs the source's runtime (fp32, limit 1e-4)\n")
    print(table(["source", "runtime", "batch", "n", "max abs diff"], parity_rows))

    animal = load_data(DataConfig(name="animal-mnist"))
    results: dict[str, dict[str, list[float]]] = {}
    for lr in (1e-3, 1e-4):
        for pretrained in (True, False):
            key = f"{'converted' if pretrained else 'random init'} @ lr {lr:g}"
            accs, secs = [], []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                labels = np.asarray(animal.train.labels)
                idx = np.concatenate([rng.choice(np.where(labels == c)[0], args.per_class, replace=False)
                                      for c in range(len(animal.classes))])
                torch.manual_seed(seed)
                clf = TransferClassifier(backbone=f"onnx:{onnx_file}", pretrained=pretrained, method="finetune",
                                         epochs=args.epochs, lr=lr, batch_size=32, progress=False, seed=seed)
                with timer() as t:
                    clf.fit(animal.train.subset(idx))
                accs.append(float(clf.evaluate(animal.test)["accuracy"]))
                secs.append(t[0])
            results[key] = {"accuracy": accs, "seconds": secs}
            print(f"{key}: {accs}", flush=True)

    rows = []
    for key, r in results.items():
        a = r["accuracy"]
        rows.append([key, f"{statistics.mean(a):.4f} +- {statistics.stdev(a) if len(a) > 1 else 0.0:.4f}",
                     ", ".join(f"{v:.4f}" for v in a), f"{statistics.mean(r['seconds']):.1f}"])
    print(f"\n## ONNX (Keras-built) CNN fine-tuned on Animal-MNIST, {args.per_class} labels/class, {args.epochs} "
          f"epochs, {args.seeds} seeds (test accuracy on 1,943 images)\n")
    print(table(["backbone onnx:cnn.onnx", "accuracy mean +- std", "per seed", "fit s (loaded machine)"], rows))
    for lr in (1e-3, 1e-4):
        conv = statistics.mean(results[f"converted @ lr {lr:g}"]["accuracy"])
        rand = statistics.mean(results[f"random init @ lr {lr:g}"]["accuracy"])
        print(f"lr {lr:g}: converted / random init = {conv / rand:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args), "keras_mnist_accuracy": keras_acc,
                                          "sklearn_digits_accuracy": mlp_acc, "parity": parity,
                                          "finetune": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
