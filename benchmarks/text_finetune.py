"""MiniLM (all-MiniLM-L6-v2, offline) on Rotten Tomatoes: frozen-feature baselines vs fine-tuning recipes.

Rows: TF-IDF + logistic regression and frozen MiniLM (mean pooled) + logistic regression, as measured baselines;
then transferkit fine-tuning recipes. Test accuracy on the fixed test split, wall time per run.

    .venv/bin/python benchmarks/text_finetune.py [--epochs 3] [--recipes full,lora,freeze-unfreeze,llrd]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from transferkit import TransferClassifier  # noqa: E402
from transferkit.config import DataConfig  # noqa: E402
from transferkit.data import load_data  # noqa: E402

RECIPES = {
    "full": dict(method="finetune", lr=5e-5, head_lr_scale=20.0, batch_size=32, warmup_fraction=0.1),
    "freeze-unfreeze": dict(method="freeze-unfreeze", lr=5e-5, head_lr_scale=20.0, batch_size=32,
                            method_params={"head_epochs": 1}, warmup_fraction=0.1),
    "llrd": dict(method="finetune", lr=8e-5, layer_decay=0.8, head_lr_scale=10.0, batch_size=32,
                 warmup_fraction=0.1),
    # LoRA on every Linear of the encoder (attention q/k/v/output and both feed-forward layers), rank 8: ~1.5% of the
    # parameters train; a higher learning rate than full fine-tuning, as usual for LoRA.
    "lora": dict(method="lora", lr=1e-3, head_lr_scale=1.0, batch_size=32, warmup_fraction=0.1,
                 method_params={"r": 8, "alpha": 16, "dropout": 0.1,
                                "target_modules": ["query", "key", "value", "dense"]}),
}


def baselines(splits) -> list[list[object]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rows = []
    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    xtr = vec.fit_transform(splits.train.inputs)
    lr = LogisticRegression(max_iter=2000, C=4.0).fit(xtr, splits.train.labels)
    acc = float((lr.predict(vec.transform(splits.test.inputs)) == splits.test.labels).mean())
    rows.append(["TF-IDF + logistic regression", acc, "—", time.perf_counter() - t0])

    t0 = time.perf_counter()
    probe = TransferClassifier(backbone="minilm-l6", method="linear-probe", epochs=1, progress=False)
    probe.fit(splits.train)  # only to build the model; features below come from the frozen backbone
    feats = {}
    import torch

    from transferkit.data.loaders import make_loader

    model = probe.model_
    for name, ds in (("train", splits.train), ("test", splits.test)):
        out = []
        with torch.no_grad():
            for x, _ in make_loader(ds, model.preprocessing, image_size=None, train=False, batch_size=128):
                out.append(model.backbone(x).numpy())
        feats[name] = np.concatenate(out)
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(feats["train"], splits.train.labels)
    acc = float((clf.predict(feats["test"]) == splits.test.labels).mean())
    rows.append(["frozen MiniLM + logistic regression", acc, "head only", time.perf_counter() - t0])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--recipes", default="full")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    splits = load_data(DataConfig(name="rotten-tomatoes"))
    rows = [] if args.no_baselines else baselines(splits)
    for name in args.recipes.split(","):
        t0 = time.perf_counter()
        clf = TransferClassifier(backbone="minilm-l6", epochs=args.epochs, **RECIPES[name])
        clf.fit(splits)
        acc = clf.evaluate(splits.test)["accuracy"]
        fr = clf.fit_result_
        share = f"{100 * fr.trainable_params / max(1, fr.total_params):.2f}%"
        rows.append([f"fine-tune MiniLM: {name} ({args.epochs} epochs, best epoch {fr.best_epoch} on val)", acc,
                     share, time.perf_counter() - t0])
    print(f"Rotten Tomatoes, test split of {len(splits.test)} texts")
    print(table(["model", "test accuracy", "trained params", "seconds"], rows))


if __name__ == "__main__":
    main()
