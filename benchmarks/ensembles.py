"""Ensembles of transfer runs (issue 15's must-shows), mean +- sample std over seeds, on Rotten Tomatoes.

Protocol. For each seed ``s`` the training split is a random ``--train-size`` subset drawn with
``data.split_seed = s`` (the fixed val and test splits stay), and every run uses ``train.seed = s``; all figures are
test accuracy / ECE (15 bins) on the fixed test split (1,275 reviews), so differences are paired over seeds.

A. Stacking of three existing runs on different backbones/methods: ``minilm-l6`` + ``probe`` (logistic regression on
   frozen features), ``bow-hash`` + ``probe`` (hashed bag of words), ``minilm-l6`` + ``mlp-head``. The stacker is fitted
   on the members' val-split probabilities (``transferkit ensemble ... --how stack``); the average is shown too.
   "Gain" is the paired per-seed difference to the member that is best on the test split (the hardest baseline).
B. Greedy soup (Wortsman et al. 2022) of ``--soup-members`` ``minilm-l6`` + ``mlp-head`` runs that share the source and
   the seeded head initialisation and differ in learning rate, chosen on val, against the best single member chosen
   on val (what a user would deploy) and the best member on test; one model's prediction cost.
D. Soups of FULL fine-tunes (the soup paper's setting) on Animal-MNIST: per seed ``s``, three fine-tunes of the whole
   ``mobilenet_v2.imagenet`` (``--soup-image-size`` px, ``--soup-train-size`` training images drawn with
   ``data.split_seed = s``, ``--soup-epochs`` epochs) with ``train.seed = s`` (the same head initialisation and data
   order) and learning rates ``--soup-lrs``; uniform and greedy soups (chosen on val, 972 images) with the batch-norm
   statistics averaged with the weights (the paper's recipe) or re-estimated on the training images (``--soup-bn
   recompute``, the default), against the best member chosen on val and on test (1,943 images); the output
   ensemble (average of the members' probabilities, three models' cost) for reference.
C. Bagging (``--members`` fits on bootstrap samples) and boosting (AdaBoost-SAMME with the loop's sample weights), each
   member ``--member-epochs`` epochs, against one run of ``members x member-epochs`` epochs (the same training
   budget): ``bow-hash`` + ``finetune`` with an MLP head (the hashed features have no weights; the loop trains the
   head, so boosting can weight rows).

    .venv/bin/python benchmarks/ensembles.py                      # 3 seeds, all parts
    .venv/bin/python benchmarks/ensembles.py --parts A --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensembles.py --parts D --threads 1   # full fine-tune soups

Frozen MiniLM features are cached (``$TRANSFERKIT_CACHE_DIR``), so val/test are extracted once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

from transferkit.api import TransferClassifier  # noqa: E402
from transferkit.app.ensemble import ensemble_runs, train_ensemble  # noqa: E402
from transferkit.app.fit import run_fit  # noqa: E402
from transferkit.config import RunConfig, apply_overrides  # noqa: E402
from transferkit.data import load_data  # noqa: E402
from transferkit.evaluate.metrics import expected_calibration_error  # noqa: E402

DATA = "rotten-tomatoes"
STACK_MEMBERS = {"minilm-probe": ("minilm-l6", "probe", {}), "bow-probe": ("bow-hash", "probe", {}),
                 "minilm-mlp-head": ("minilm-l6", "mlp-head", {"train.epochs": 20, "train.lr": 1e-3})}
SOUP_LRS = (3e-4, 1e-3, 3e-3, 1e-2)


def _cfg(out: Path, seed: int, train_size: int, backbone: str, method: str, extra: dict[str, Any],
         data: str = DATA) -> RunConfig:
    sets = {"data.name": data, "data.train_size": train_size, "data.split_seed": seed, "model.backbone": backbone,
            "model.method": method, "train.seed": seed, "train.progress": False, "out": str(out), **extra}
    return apply_overrides(RunConfig(), list(sets.items()))


def _pm(values: list[float], scale: float = 100.0) -> str:
    m = statistics.fmean(values) * scale
    return f"{m:.2f} ± {statistics.stdev(values) * scale:.2f}" if len(values) > 1 else f"{m:.2f}"


def _gain(values: list[float]) -> str:
    """Mean +- std of paired differences, and whether the mean exceeds two standard errors."""
    if len(values) < 2:
        return _pm(values)
    se = statistics.stdev(values) / len(values) ** 0.5
    verdict = "beyond noise" if abs(statistics.fmean(values)) > 2 * se else "within noise"
    return f"{_pm(values)} ({verdict})"


def part_a(root: Path, seeds: list[int], train_size: int) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for s in seeds:
        runs = []
        for name, (backbone, method, extra) in STACK_MEMBERS.items():
            runs.append(run_fit(_cfg(root / f"a{s}-{name}", s, train_size, backbone, method, extra)).out)
        st = ensemble_runs(runs, how="stack", out=root / f"a{s}-stack", data=_cfg(root, s, train_size, "x", "probe",
                                                                                   {}).data).report
        av = ensemble_runs(runs, how="average", out=root / f"a{s}-avg", data=_cfg(root, s, train_size, "x", "probe",
                                                                                  {}).data).report
        members = {m["name"].split("-", 1)[1]: m for m in st["members"]}
        best = max(m["accuracy"] for m in members.values())
        rows.append({"seed": s, **{f"{k}_acc": v["accuracy"] for k, v in members.items()}, "best_member_acc": best,
                     "stack_acc": st["ensemble"]["accuracy"], "average_acc": av["ensemble"]["accuracy"],
                     "stack_ece": st["ensemble"]["ece"], "best_member_ece": min(m["ece"] for m in members.values()),
                     "disagreement": st["disagreement"]})
        print(f"A seed {s}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return table_a(rows), rows


def table_a(rows: list[dict[str, Any]]) -> str:
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    body = [[name, _pm(col(f"{name}_acc")), "", ""] for name in STACK_MEMBERS]
    body += [["best member (on test)", _pm(col("best_member_acc")), "", ""],
             ["average of the three", _pm(col("average_acc")),
              _gain([a - b for a, b in zip(col("average_acc"), col("best_member_acc"), strict=True)]), ""],
             ["stack (LR on val probabilities)", _pm(col("stack_acc")),
              _gain([a - b for a, b in zip(col("stack_acc"), col("best_member_acc"), strict=True)]),
              f"{_pm(col('stack_ece'))} (best member's {_pm(col('best_member_ece'))})"]]
    text = table(["model", "test acc %", "gain vs best member (paired, points)", "ECE %"], body)
    text += f"\n\nMembers' mean pairwise disagreement: {_pm(col('disagreement'))} % of test reviews."
    return text


def part_b(root: Path, seeds: list[int], train_size: int, lrs: tuple[float, ...]) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for s in seeds:
        runs = [run_fit(_cfg(root / f"b{s}-lr{lr:g}", s, train_size, "minilm-l6", "mlp-head",
                             {"train.epochs": 20, "train.lr": lr})).out for lr in lrs]
        data = _cfg(root, s, train_size, "x", "probe", {}).data
        g = ensemble_runs(runs, how="greedy-soup", out=root / f"b{s}-greedy", data=data).report
        u = ensemble_runs(runs, how="uniform-soup", out=root / f"b{s}-uniform", data=data).report
        val_best = max(g["greedy_trace"], key=lambda t: t["member_accuracy"])["member"]
        by_name = {m["name"]: m for m in g["members"]}
        rows.append({"seed": s, "greedy_acc": g["ensemble"]["accuracy"], "uniform_acc": u["ensemble"]["accuracy"],
                     "val_best_member_acc": by_name[val_best]["accuracy"],
                     "test_best_member_acc": max(m["accuracy"] for m in g["members"]),
                     "in_soup": len(g["members_in_soup"]), "greedy_ece": g["ensemble"]["ece"],
                     "val_best_member_ece": by_name[val_best]["ece"]})
        print(f"B seed {s}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return table_b(rows, len(lrs)), rows


def table_b(rows: list[dict[str, Any]], n_members: int) -> str:
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    paired = lambda a, b: [x - y for x, y in zip(col(a), col(b), strict=True)]  # noqa: E731
    body = [["best single member (chosen on val)", _pm(col("val_best_member_acc")), "",
             _pm(col("val_best_member_ece"))],
            ["best single member (on test, optimistic)", _pm(col("test_best_member_acc")), "", ""],
            ["uniform soup", _pm(col("uniform_acc")), _gain(paired("uniform_acc", "val_best_member_acc")), ""],
            [f"greedy soup ({statistics.fmean(col('in_soup')):.1f} of {n_members} members kept)",
             _pm(col("greedy_acc")), _gain(paired("greedy_acc", "val_best_member_acc")), _pm(col("greedy_ece"))]]
    return table(["model (one model's prediction cost)", "test acc %", "gain vs val-chosen member (paired)",
                  "ECE %"], body)


SOUP_DATA = "animal-mnist"


def part_d(root: Path, seeds: list[int], train_size: int, image_size: int, epochs: int, lrs: tuple[float, ...]
           ) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for s in seeds:
        t0 = time.perf_counter()
        runs = [run_fit(_cfg(root / f"d{s}-lr{lr:g}", s, train_size, "mobilenet_v2.imagenet", "finetune",
                             {"model.image_size": image_size, "train.epochs": epochs, "train.lr": lr},
                             data=SOUP_DATA)).out for lr in lrs]
        t_fit = time.perf_counter() - t0
        data = _cfg(root, s, train_size, "x", "probe", {}, data=SOUP_DATA).data
        reports, secs = {}, {}
        for how in ("greedy-soup", "uniform-soup"):
            for bn in ("recompute", "average"):
                t0 = time.perf_counter()
                reports[how, bn] = ensemble_runs(runs, how=how, out=root / f"d{s}-{how}-{bn}", data=data,
                                                 soup_bn=bn).report
                secs[how, bn] = time.perf_counter() - t0
        a = ensemble_runs(runs, how="average", out=root / f"d{s}-avg", data=data).report
        g = reports["greedy-soup", "recompute"]
        val_best = max(g["greedy_trace"], key=lambda t: t["member_accuracy"])["member"]
        by_name = {m["name"]: m for m in g["members"]}
        row = {"seed": s, "average_acc": a["ensemble"]["accuracy"], "average_ece": a["ensemble"]["ece"],
               "val_best_member_acc": by_name[val_best]["accuracy"], "val_best_member_ece": by_name[val_best]["ece"],
               "test_best_member_acc": max(m["accuracy"] for m in g["members"]),
               "member_accs": [m["accuracy"] for m in g["members"]],
               "member_val_accs": {t["member"]: t["member_accuracy"] for t in g["greedy_trace"]}, "fit_s": t_fit}
        for (how, bn), r in reports.items():
            key = f"{how.split('-')[0]}_{bn}"
            row.update({f"{key}_acc": r["ensemble"]["accuracy"], f"{key}_ece": r["ensemble"]["ece"],
                        f"{key}_s": secs[how, bn]})
            if how == "greedy-soup":
                row[f"{key}_kept"] = len(r["members_in_soup"])
        rows.append(row)
        print(f"D seed {s}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return table_d(rows, [f"{lr:g}" for lr in lrs]), rows


def table_d(rows: list[dict[str, Any]], lrs: list[str]) -> str:
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    paired = lambda a, b: [x - y for x, y in zip(col(a), col(b), strict=True)]  # noqa: E731
    n = len(lrs)
    body = [[f"member, lr {lr}", _pm([r["member_accs"][i] for r in rows]), "", "", "1"] for i, lr in enumerate(lrs)]
    body += [["best single member (chosen on val)", _pm(col("val_best_member_acc")), "",
              _pm(col("val_best_member_ece")), "1"],
             ["best single member (on test, optimistic)", _pm(col("test_best_member_acc")),
              _gain(paired("test_best_member_acc", "val_best_member_acc")), "", "1"]]
    for name, key in (("uniform soup", "uniform"), ("greedy soup", "greedy")):
        for bn, says in (("average", "averaged (the paper's recipe)"), ("recompute", "re-estimated on train")):
            kept = (f" ({statistics.fmean(col(f'greedy_{bn}_kept')):.1f} of {n} kept)" if key == "greedy" else "")
            body.append([f"{name}{kept}, BN statistics {says}", _pm(col(f"{key}_{bn}_acc")),
                         _gain(paired(f"{key}_{bn}_acc", "val_best_member_acc")), _pm(col(f"{key}_{bn}_ece")), "1"])
    body.append(["average of the members' probabilities (reference)", _pm(col("average_acc")),
                 _gain(paired("average_acc", "val_best_member_acc")), _pm(col("average_ece")), str(n)])
    return table(["model", "test acc %", "gain vs val-chosen member (paired, points)", "ECE %",
                  "models run per prediction"], body)


def part_c(root: Path, seeds: list[int], train_size: int, members: int, member_epochs: int, jobs: int
           ) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    base = {"model.head": "mlp", "model.head_hidden": 128, "train.lr": 3e-3}
    for s in seeds:
        t0 = time.perf_counter()
        single = run_fit(_cfg(root / f"c{s}-single", s, train_size, "bow-hash", "finetune",
                              {**base, "train.epochs": members * member_epochs}))
        t_single = time.perf_counter() - t0
        out = {}
        for strategy in ("bagging", "boosting"):
            t0 = time.perf_counter()
            cfg = _cfg(root / f"c{s}-{strategy}", s, train_size, "bow-hash", "finetune",
                       {**base, "train.epochs": member_epochs})
            out[strategy] = (train_ensemble(cfg, strategy, members=members, jobs=jobs).report,
                             time.perf_counter() - t0)
        test = single.metrics["test"]
        est = TransferClassifier.load(single.out)
        ds = load_data(cfg.data).test
        single_ece = expected_calibration_error(ds.labels, est.predict_proba(ds))
        rows.append({"seed": s, "single_acc": test["accuracy"], "single_ece": single_ece, "single_s": t_single,
                     **{f"{k}_acc": r["ensemble"]["accuracy"] for k, (r, _) in out.items()},
                     **{f"{k}_ece": r["ensemble"]["ece"] for k, (r, _) in out.items()},
                     **{f"{k}_s": t for k, (_, t) in out.items()},
                     "boosting_members": len(out["boosting"][0]["members"])})
        print(f"C seed {s}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return table_c(rows, members, member_epochs), rows


def table_c(rows: list[dict[str, Any]], members: int, member_epochs: int) -> str:
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    paired = lambda a: [x - y for x, y in zip(col(a), col("single_acc"), strict=True)]  # noqa: E731
    body = [[f"single run, {members * member_epochs} epochs", _pm(col("single_acc")), "", _pm(col("single_ece")),
             f"{statistics.fmean(col('single_s')):.0f}"]]
    for k in ("bagging", "boosting"):
        label = f"{k}, {members} x {member_epochs} epochs" + (
            f" ({statistics.fmean(col('boosting_members')):.1f} members kept)" if k == "boosting" else "")
        body.append([label, _pm(col(f"{k}_acc")), _gain(paired(f"{k}_acc")), _pm(col(f"{k}_ece")),
                     f"{statistics.fmean(col(f'{k}_s')):.0f}"])
    return table(["model (same training budget)", "test acc %", "gain vs single (paired)", "ECE %",
                  "wall s (loaded machine)"], body)


def summarise_log(path: str, n_members: int, members: int, member_epochs: int) -> None:
    """Print the tables from the per-seed lines (``A seed 0: {...}``) a run wrote to stderr, e.g. of a run that was
    stopped before its last seed."""
    rows: dict[str, list[dict[str, Any]]] = {"A": [], "B": [], "C": [], "D": []}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if len(line) > 8 and line[0] in rows and line[1:8] == " seed " + line[7] and ": {" in line:
            rows[line[0]].append(json.loads(line.split(": ", 1)[1]))
    if rows["A"]:
        print(f"### A ({len(rows['A'])} seeds)\n\n{table_a(rows['A'])}\n")
    if rows["B"]:
        print(f"### B ({len(rows['B'])} seeds)\n\n{table_b(rows['B'], n_members)}\n")
    if rows["C"]:
        print(f"### C ({len(rows['C'])} seeds)\n\n{table_c(rows['C'], members, member_epochs)}\n")
    if rows["D"]:
        lrs = [name.rsplit("lr", 1)[-1] for name in rows["D"][0]["member_val_accs"]]
        print(f"### D ({len(rows['D'])} seeds)\n\n{table_d(rows['D'], sorted(lrs, key=float))}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["A", "B", "C", "D"], choices=["A", "B", "C", "D"])
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--member-epochs", type=int, default=2)
    ap.add_argument("--soup-members", type=int, default=len(SOUP_LRS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--soup-train-size", type=int, default=1000, help="part D: Animal-MNIST training images")
    ap.add_argument("--soup-image-size", type=int, default=64, help="part D: image size in pixels")
    ap.add_argument("--soup-epochs", type=int, default=2, help="part D: epochs per fine-tune")
    ap.add_argument("--soup-lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3],
                    help="part D: the members' learning rates (the head's is train.head_lr_scale times more)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    ap.add_argument("--results", help="also write every per-seed row to this JSON file")
    ap.add_argument("--summarise", metavar="LOG", help="only print the tables of the per-seed lines in LOG (stderr "
                                                        "of an earlier run)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.summarise:
        summarise_log(args.summarise, args.soup_members, args.members, args.member_epochs)
        return
    print(f"Ensembles, parts {' '.join(args.parts)}, seeds {args.seeds}; {machine()}\n")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tk-ensembles-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        if "A" in args.parts:
            text, results["A"] = part_a(root, args.seeds, args.train_size)
            print("### A. Stacking three existing runs\n\n" + text + "\n", flush=True)
        if "B" in args.parts:
            text, results["B"] = part_b(root, args.seeds, args.train_size, SOUP_LRS[: args.soup_members])
            print("### B. Greedy soup vs the best single member\n\n" + text + "\n", flush=True)
        if "C" in args.parts:
            text, results["C"] = part_c(root, args.seeds, args.train_size, args.members, args.member_epochs,
                                        args.jobs)
            print("### C. Bagging and boosting vs one run of the same budget\n\n" + text + "\n", flush=True)
        if "D" in args.parts:
            text, results["D"] = part_d(root, args.seeds, args.soup_train_size, args.soup_image_size,
                                        args.soup_epochs, tuple(args.soup_lrs))
            print(f"### D. Soups of full fine-tunes ({SOUP_DATA}, {args.soup_train_size} training images, "
                  f"{args.soup_image_size} px, {args.soup_epochs} epochs)\n\n" + text + "\n", flush=True)
        print(f"total wall time {time.perf_counter() - t0:.0f} s (shared, loaded machine)")
    if args.results:
        Path(args.results).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
