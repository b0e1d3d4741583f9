"""Teachers from other frameworks through the cached mode: Keras 3, ONNX-only and scikit-learn GBT teachers teaching a
PyTorch MLP student on few labels; a network distilled into scikit-learn; the cache's read-back speed-up.

Data: scikit-learn's bundled ``digits`` as a tabular set (1,797 rows, 64 features, 10 classes; offline). Per seed:
a third is the test set, the other two thirds the pool. The **teachers** are trained on the whole labelled pool (the
teacher's owner had the labels: a production model from another framework); the **student** (``mlp:64-64``, PyTorch)
gets ``--per-class`` labels per class from the pool, and in the distilled rows the teacher's cached outputs on every
pool row (``fit(..., extra={"unlabelled": rest of the pool})``, method ``kd``, ``teacher_mode: cached``). Baseline:
the same student on its labels alone, same epochs. One more row shows the opposite case honestly: a gradient-boosted
teacher trained on the student's own few labels (no more knowledge than the student has).

Teachers: ``sklearn-gbt`` (``HistGradientBoostingClassifier``, given as the Python estimator), ``keras-mlp`` (a Keras 3
MLP on the torch backend trained here, saved as ``.keras`` and loaded from the file with ``safe_mode=True``) and
``onnx-logreg`` (a scikit-learn logistic regression converted by skl2onnx; only the ``.onnx`` file teaches).

The reverse direction: ``distil_to_sklearn`` fits a scikit-learn ``HistGradientBoostingRegressor`` per class on a
PyTorch MLP teacher's logits over the pool (no labels needed), against the same estimator type trained on the
student's few labels.

Cache: teacher_outputs of the Keras teacher on the pool, first (computes, writes the cache) vs second call (reads it;
fingerprint of the file and the data included), in one process.

    .venv/bin/python benchmarks/distil_cross_framework.py [--seeds 0 1 2] [--per-class 3] [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402


def split(seed: int, per_class: int) -> dict[str, np.ndarray]:
    """Test third, pool, the student's labelled rows and the rest of the pool, for one seed."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    idx = np.random.default_rng(seed).permutation(len(x))
    test, pool = idx[: len(x) // 3], idx[len(x) // 3:]
    lab = np.concatenate([pool[y[pool] == c][:per_class] for c in range(10)])
    rest = np.setdiff1d(pool, lab)
    return {"x": x, "y": y.astype(np.int64), "test": test, "pool": pool, "lab": lab, "rest": rest}


def keras_teacher(x: np.ndarray, y: np.ndarray, folder: Path, seed: int) -> Path:
    from transferkit.teachers.foreign import _import_keras

    keras = _import_keras()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    path = folder / f"keras-{seed}.keras"
    model.save(path)
    return path


def onnx_teacher(x: np.ndarray, y: np.ndarray, folder: Path, seed: int) -> Path:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    est = LogisticRegression(max_iter=2000, C=1.0).fit(x, y)
    onx = to_onnx(est, x[:1], options={id(est): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path = folder / f"logreg-{seed}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tk-distil-xf-"))
    os.environ.setdefault("TRANSFERKIT_CACHE_DIR", str(folder / "cache"))

    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from transferkit import TransferClassifier
    from transferkit.data.base import Dataset
    from transferkit.teachers import distil_to_sklearn, load_teacher, teacher_outputs

    classes = [str(i) for i in range(10)]
    acc: dict[str, list[float]] = {}
    teacher_acc: dict[str, list[float]] = {}
    cache_times: list[tuple[float, float]] = []
    t_start = time.perf_counter()

    def add(d: dict[str, list[float]], key: str, value: float) -> None:
        d.setdefault(key, []).append(float(value))

    for seed in args.seeds:
        s = split(seed, args.per_class)
        x, y = s["x"], s["y"]
        def ds(rows: np.ndarray, labelled: bool = True, x: np.ndarray = x, y: np.ndarray = y) -> Dataset:
            return Dataset("tabular", x[rows], y[rows] if labelled else None, classes, "digits")

        test = ds(s["test"])
        kw = {"backbone": "mlp:64-64", "epochs": args.epochs, "batch_size": 64, "lr": 3e-3, "progress": False,
              "seed": seed}

        def student(teacher: object | None, unlabelled: bool = True, s: dict = s, kw: dict = kw, ds=ds,
                    test: Dataset = test) -> float:
            if teacher is None:
                clf = TransferClassifier(**kw).fit(ds(s["lab"]))
            else:
                params = {"teacher": teacher, "teacher_mode": "cached", "alpha": 0.5, "temperature": 2.0}
                extra = {"unlabelled": ds(s["rest"], labelled=False)} if unlabelled else None
                clf = TransferClassifier(method="kd", method_params=params, **kw).fit(ds(s["lab"]), extra=extra)
            return float(clf.evaluate(test)["accuracy"])

        add(acc, "labels only", student(None))
        gbt = HistGradientBoostingClassifier(random_state=seed).fit(x[s["pool"]], y[s["pool"]])
        add(teacher_acc, "sklearn-gbt", (gbt.predict(x[s["test"]]) == y[s["test"]]).mean())
        add(acc, "sklearn-gbt", student(gbt))
        kpath = keras_teacher(x[s["pool"]], y[s["pool"]], folder, seed)
        kt = load_teacher(str(kpath), classes=classes)
        add(teacher_acc, "keras-mlp", (kt.outputs(test).argmax(1) == y[s["test"]]).mean())
        pool_ds = ds(s["pool"], labelled=False)
        t0 = time.perf_counter()
        teacher_outputs(kt, pool_ds)
        t1 = time.perf_counter()
        teacher_outputs(load_teacher(str(kpath), classes=classes), pool_ds)  # a fresh teacher object, as a new run
        t2 = time.perf_counter()
        cache_times.append((t1 - t0, t2 - t1))
        add(acc, "keras-mlp", student(str(kpath)))
        opath = onnx_teacher(x[s["pool"]], y[s["pool"]], folder, seed)
        ot = load_teacher(str(opath), classes=classes)
        add(teacher_acc, "onnx-logreg", (ot.outputs(test).argmax(1) == y[s["test"]]).mean())
        add(acc, "onnx-logreg", student(str(opath)))
        weak = HistGradientBoostingClassifier(random_state=seed, min_samples_leaf=3).fit(x[s["lab"]], y[s["lab"]])
        add(teacher_acc, "sklearn-gbt on the student's labels", (weak.predict(x[s["test"]]) == y[s["test"]]).mean())
        add(acc, "sklearn-gbt on the student's labels", student(weak))

        # the reverse: a network distilled into scikit-learn (no labels), vs the same estimator on the few labels
        net = TransferClassifier(**kw).fit(ds(s["pool"]))
        add(teacher_acc, "torch-mlp (for sklearn)", net.evaluate(test)["accuracy"])
        dist = distil_to_sklearn(net, pool_ds, HistGradientBoostingRegressor(random_state=seed, max_iter=100))
        add(acc, "sklearn-gbr distilled from torch-mlp", (dist.predict(x[s["test"]]) == y[s["test"]]).mean())
        few = HistGradientBoostingClassifier(random_state=seed, min_samples_leaf=3).fit(x[s["lab"]], y[s["lab"]])
        add(acc, "sklearn-gbt on the few labels", (few.predict(x[s["test"]]) == y[s["test"]]).mean())
        print(f"seed {seed} done after {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)

    def ms(v: list[float]) -> str:
        return f"{np.mean(v):.3f} +- {np.std(v):.3f}"

    base = acc["labels only"]
    rows = []
    for name, v in acc.items():
        gain = np.array(v) - np.array(base)
        rows.append([name, ms(teacher_acc[name]) if name in teacher_acc else "-", ms(v),
                     f"{gain.mean():+.3f} +- {gain.std():.3f}" if name != "labels only" else "-"])
    print(f"## Cross-framework distillation on digits (tabular), {args.per_class} labels per class, "
          f"{len(args.seeds)} seeds ({machine()}, shared machine under load)\n")
    print(table(["student trained with", "teacher test acc", "student test acc", "gain vs labels only"], rows))
    first, second = np.array([c[0] for c in cache_times]), np.array([c[1] for c in cache_times])
    print("\n## Cached teacher: teacher_outputs of the Keras teacher on the pool (1,198 rows), same process\n")
    print(table(["first call (s)", "second call, read back (s)", "ratio"],
                [[ms(first.tolist()), ms(second.tolist()), f"{np.mean(first / second):.1f}x"]]))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
