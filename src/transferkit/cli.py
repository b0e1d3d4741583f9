"""The command line: a thin layer over the Python API and the one config schema.

    transferkit fit CONFIG.yaml [--set train.lr=3e-4 ...] [--resume] [--overwrite]
    transferkit fit --data animal-mnist --backbone mobilenet_v2.imagenet --method finetune --out runs/animal
    transferkit evaluate RUN DATA [--split test] [--trust-code]
    transferkit predict RUN PATH [PATH ...] [--out predictions.csv] [--trust-code]
    transferkit rank --data animal-mnist --backbones mobilenet_v2.imagenet,mobilenet_v2.imagenet@4,timm:resnet18~random
    transferkit compare CONFIG.yaml --methods source-only,dann,cdan --seeds 3 [--embedding tsne|pca|none]
    transferkit export RUN --format onnx [--int8] --out DIR
    transferkit compress RUN --prune 0.5 [--prune-steps 2] [--recover-epochs 5] --int8 --out DIR
    transferkit serve RUN_OR_EXPORT [--host 127.0.0.1] [--port 8000] [--max-batch 32] [--no-batching]
    transferkit report FOLDER [--out report.html]
    transferkit cache list | clear
    transferkit convert model.onnx|model.keras --out model.safetensors [--data animal-mnist]
    transferkit distil CONFIG.yaml [--set model.method_params.teacher=runs/teacher ...]
    transferkit datasets | backbones | methods

Heavy libraries (torch, transformers) are imported only inside the commands, so ``--help`` answers at once. A user
error prints one sentence and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import TransferkitError
from .version import __version__

_TRUST_HELP = ("let the model folder import and run the backbone code it names (your own module: factory); "
               "only for a folder from a source you trust")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors worded like every other user error: ``transferkit: error: <sentence>``."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        sentence = _one_line(message)
        self.exit(2, f"transferkit: error: {sentence}{'' if sentence.endswith(('.', '?', ')')) else '.'}\n")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (counts, sizes, k of top-k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="transferkit", description="Transfer learning on PyTorch, offline and honest.")
    p.add_argument("--version", action="version", version=f"transferkit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("fit", help="train a model and write a run folder")
    f.add_argument("config", nargs="?", help="a YAML run configuration (optional)")
    f.add_argument("--data", help="a built-in data set name, an image folder, or a CSV/TSV/JSONL file")
    f.add_argument("--backbone", help="a backbone name (see `transferkit backbones`)")
    f.add_argument("--method", help="a method name (see `transferkit methods`)")
    f.add_argument("--epochs", type=_positive_int, help="number of epochs")
    f.add_argument("--out", help="the run folder to write")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
    f.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    f.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    e = sub.add_parser("evaluate", help="evaluate a finished run on labelled data")
    e.add_argument("run", help="a run folder (or a folder written by save())")
    e.add_argument("data", help="a built-in data set name, an image folder, or a CSV/TSV/JSONL file")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    e.add_argument("--out", help="also write the metrics to this JSON file")
    e.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)

    pr = sub.add_parser("predict", help="predict classes of image files/folders (or a text file, one per line)")
    pr.add_argument("run", help="a run folder (or a folder written by save())")
    pr.add_argument("paths", nargs="+", help="image files or folders; for text models, .txt files (one per line)")
    pr.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    pr.add_argument("--top-k", type=_positive_int, default=1,
                    help="also list the k most likely classes (more than the model has: all of them)")
    pr.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)

    rk = sub.add_parser("rank", help="rank candidate backbones on your data without training (LogME, LEEP, ...)")
    rk.add_argument("--data", required=True, help="a built-in data set name, an image folder, or a CSV/TSV/JSONL file")
    rk.add_argument("--backbones", required=True, metavar="A,B,C",
                    help="comma-separated candidates: name, name@LAYER (block index or module path), name@L1+L2, "
                         "name~random (random weights)")
    rk.add_argument("--max-samples", type=_positive_int, default=500, help="training examples scored (default 500)")
    rk.add_argument("--metrics", default="logme,leep,hscore,knn", help="any of logme,leep,hscore,knn")
    rk.add_argument("--image-size", type=_positive_int, help="image side in pixels (default: each backbone's own)")
    rk.add_argument("--seed", type=int, default=0, help="seed of the subsample and of random weights")
    rk.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"],
                    help="feature extraction engine (default auto)")
    rk.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    rk.add_argument("--out", help="also write the ranking to this JSON file")

    cp = sub.add_parser("compare", help="compare domain-adaptation methods over seeds on a source/target pair")
    cp.add_argument("config", help="a YAML run configuration with data (the source) and target sections, e.g. "
                                   "examples/mnist_to_mnist_m.yaml (images), examples/rotten_comedy_to_thriller.yaml "
                                   "(text)")
    cp.add_argument("--methods", required=True, metavar="A,B,C",
                    help="comma-separated methods, e.g. source-only,dann,cdan,target-oracle")
    cp.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds (0..N-1; default 3)")
    cp.add_argument("--embedding", default="tsne", choices=["tsne", "pca", "none"],
                    help="2-D embedding of the before/after feature plot (default tsne)")
    cp.add_argument("--out", help="the comparison folder to write (default: the config's out)")
    cp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.epochs=10 (repeatable)")
    cp.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    cp.add_argument("--jobs", type=_positive_int, default=1, help="run the methods x seeds fits in N processes")
    cp.add_argument("--backend", default="local", choices=["local", "ray"],
                    help="where parallel fits run: local processes, or a Ray cluster (pip install ray)")

    en = sub.add_parser("ensemble", help="combine finished runs, or train an ensemble, into one model folder")
    en.add_argument("runs", nargs="*", help="finished run folders to combine (with --how)")
    en.add_argument("--how", choices=["average", "vote", "stack", "uniform-soup", "greedy-soup"],
                    help="how to combine the runs (stack and greedy-soup fit on --fit-split)")
    en.add_argument("--data", help="the labelled data the runs were trained for: the report's --split and the "
                                   "stacker's --fit-split come from it")
    en.add_argument("--split", default="test", choices=["val", "test"], help="split the report is measured on")
    en.add_argument("--fit-split", default="val", choices=["train", "val", "test"],
                    help="held-out split a stacker or greedy soup is fitted on (default val; never train)")
    en.add_argument("--weights", metavar="W1,W2,...", help="one weight per run for --how average or vote")
    en.add_argument("--soup-bn", default="recompute", choices=["recompute", "average"],
                    help="soups: re-estimate batch-norm statistics that differ between members on the training "
                         "split (default), or keep the members' mean")
    en.add_argument("--config", help="a YAML run configuration to train an ensemble from (with --strategy)")
    en.add_argument("--strategy", choices=["bagging", "boosting", "snapshot", "swa"],
                    help="train an ensemble from --config: bagging, boosting (AdaBoost-SAMME), snapshot or swa")
    en.add_argument("--members", type=_positive_int, default=5, help="members to train (default 5)")
    en.add_argument("--no-bootstrap", action="store_true", help="bagging: every member sees all the data")
    en.add_argument("--jobs", type=_positive_int, default=1, help="independent fits run in N parallel processes")
    en.add_argument("--backend", default="local", choices=["local", "ray"],
                    help="where parallel fits run: local processes, or a Ray cluster (pip install ray)")
    en.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key of --config (repeatable)")
    en.add_argument("--out", required=True, help="the ensemble folder to write")
    en.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    en.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)

    _add_compress_parsers(sub)
    sv = sub.add_parser("serve", help="serve a run, saved model or exported folder over HTTP (FastAPI + uvicorn)")
    sv.add_argument("model", metavar="RUN_OR_EXPORT", help="a run folder, a folder written by save(), or an export")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--max-batch", type=_positive_int, default=32,
                    help="most inputs in one micro-batched forward pass (default 32)")
    sv.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="how long a request waits for others to share its forward pass (default 5)")
    sv.add_argument("--max-request-mb", type=float, default=10.0, help="largest request body in MB (default 10)")
    sv.add_argument("--top-k", type=_positive_int, default=5, help="classes returned per input (default 5)")
    sv.add_argument("--no-batching", action="store_true", help="one forward pass per request")
    sv.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)
    rp = sub.add_parser("report", help="(re)build report.html of a run or comparison folder from its files")
    rp.add_argument("folder", help="a run folder (transferkit fit) or a comparison folder (transferkit compare)")
    rp.add_argument("--out", help="write the report here instead of FOLDER/report.html")

    c = sub.add_parser("cache", help="list or clear the feature cache ($TRANSFERKIT_CACHE_DIR)")
    cache_sub = c.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache_sub.add_parser("list", help="list cached features and exported ONNX models")
    cache_sub.add_parser("clear", help="remove every cached feature set and exported model")

    sub.add_parser("datasets", help="list the built-in offline data sets")
    sub.add_parser("backbones", help="list the built-in offline backbones and the hub prefixes")
    sub.add_parser("methods", help="list the transfer methods")
    _add_convert_parser(sub)
    _add_distil_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``transferkit`` console script.

    A :class:`TransferkitError` prints its sentence on one line and exits with status 2; so does an ``OSError``
    about a path that is the machine's or the user's doing (see :func:`_path_error_sentence`). Anything else is a
    bug and keeps its traceback. Warnings print as one ``transferkit: warning:`` line each while the command runs.
    """
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    _OUTPUTS.clear()
    with warnings.catch_warnings():  # restores the previous showwarning when the command ends (in-process callers)
        warnings.showwarning = _plain_warning
        try:
            return _COMMANDS[args.command](args)
        except TransferkitError as e:
            return _fail(str(e))
        except OSError as e:
            sentence = _path_error_sentence(e)
            if sentence is None:
                raise
            return _fail(sentence)
        except KeyboardInterrupt:
            print("transferkit: interrupted; continue a fit with --resume.", file=sys.stderr)
            return 130


def _fail(sentence: str) -> int:
    print(f"transferkit: error: {_one_line(sentence)}", file=sys.stderr)
    return 2


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return re.sub(r"\s+", " ", str(text)).strip()


def _plain_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"transferkit: warning: {_one_line(message)}", file=sys.stderr)


#: the output paths of the running command (recorded by :func:`_output`), for :func:`_path_error_sentence`
_OUTPUTS: list[Path] = []

#: errors about the machine rather than the code: a sentence wherever they happen, as long as they name a path
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG}
#: errors about a path's shape: a sentence only for the command's own outputs (elsewhere they may be bugs)
_OUTPUT_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST}


def _output(path: str | os.PathLike[str], kind: str, what: str = "--out") -> Path:
    """Check an output path up front (:func:`transferkit.io.check_output_path`) and remember it for main."""
    from .io import check_output_path

    checked = check_output_path(path, kind=kind, what=what)
    _OUTPUTS.append(checked.absolute())
    return checked


def _path_error_sentence(e: OSError) -> str | None:
    """One sentence for an OSError that is the user's or the machine's doing, or ``None`` for a (likely) bug."""
    names = [Path(os.fsdecode(n)) for n in (e.filename, e.filename2) if isinstance(n, str | bytes | os.PathLike)]
    if not names or e.errno not in _ENVIRONMENT_ERRNOS | _OUTPUT_ERRNOS:
        return None
    ours = [n for n in names if _is_output(n)]
    if e.errno in _OUTPUT_ERRNOS and not ours:
        return None
    name = (ours or names)[0]
    verb = "write" if ours else "use"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        remedy = "free some disk space (or choose another location) and try again"
    elif e.errno == errno.EROFS or (ours and e.errno in (errno.EACCES, errno.EPERM)):
        remedy = "choose a location you may write to, or fix its permissions"
    elif e.errno in (errno.EACCES, errno.EPERM):
        remedy = "check its permissions"
    elif e.errno == errno.ENAMETOOLONG:
        remedy = "use a shorter path"
    else:
        remedy = "choose another path"
    return f"Cannot {verb} '{name}': {e.strerror or e}; {remedy}."


def _is_output(path: Path) -> bool:
    """Whether ``path`` is one of the command's outputs, inside one, a folder above one, or a temporary sibling."""
    p = path.absolute()
    for out in _OUTPUTS:
        if p == out or out in p.parents or p in out.parents:
            return True
        if p.parent == out.parent and p.name.startswith(f".{out.name}"):
            return True
    return False


def _fit(args: argparse.Namespace) -> int:
    from .app.fit import run_fit
    from .config import RunConfig, apply_overrides, load_yaml

    cfg = load_yaml(args.config) if args.config else RunConfig()
    overrides = list(args.overrides)
    if args.data:
        from .data import resolve_data_arg

        data = resolve_data_arg(args.data)
        key = "data.path" if data.path is not None else "data.name"
        overrides.insert(0, f"{key}={args.data}")
        overrides.insert(0, "data.name=null" if key == "data.path" else "data.path=null")
    for flag, key in (("backbone", "model.backbone"), ("method", "model.method"), ("epochs", "train.epochs"),
                      ("out", "out")):
        value = getattr(args, flag)
        if value is not None:
            overrides.insert(0, (key, value))  # a flag's value as given, not parsed as YAML
    if args.overwrite:
        overrides.append("overwrite=true")
    cfg = apply_overrides(cfg, overrides)
    if cfg.data.name is None and cfg.data.path is None:
        cfg = apply_overrides(cfg, ["data.name=animal-mnist"])
    _output(cfg.out, "folder", what="run folder")
    from .app.distil import side_by_side_hook, teacher_spec

    hook = side_by_side_hook(cfg) if teacher_spec(cfg) is not None else None  # a teacher: distil's files too
    result = run_fit(cfg, resume=args.resume, after_write=hook)
    if not result.metrics:
        return 0  # a non-zero rank of a multi-process launch: rank 0 reports
    from .evaluate import format_metrics_table

    print(format_metrics_table(result.metrics))
    shown = "test" if "test" in result.metrics else next(iter(result.metrics))
    print(f"{shown} accuracy: {result.metrics[shown]['accuracy']:.4f}")
    print(f"run folder: {result.out}")
    return 0


def _load_split(data: str, split: str):  # noqa: ANN202
    from .data import load_data, resolve_data_arg
    from .errors import DataError

    splits = load_data(resolve_data_arg(data))
    ds = getattr(splits, split)
    if ds is None:
        raise DataError(f"'{data}' has no {split} split; choose --split train, val or test.")
    return ds


def _evaluate(args: argparse.Namespace) -> int:
    from .api import TransferClassifier
    from .evaluate import format_metrics_table
    from .io import write_json

    if args.out:
        _output(args.out, "file")
    est = TransferClassifier.load(args.run, trust_code=args.trust_code)
    ds = _load_split(args.data, args.split)
    metrics = est.evaluate(ds)
    print(format_metrics_table({args.split: metrics}))
    if args.out:
        write_json(args.out, metrics)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .api import TransferClassifier
    from .errors import DataError
    from .evaluate import write_predictions_csv

    _output(args.out, "file")
    est = TransferClassifier.load(args.run, trust_code=args.trust_code)
    modality = est.model_.preprocessing.modality
    if modality == "text":
        texts: list[str] = []
        for p in args.paths:
            path = Path(p)
            if not path.is_file():
                raise DataError(f"'{p}' is not a file; for a text model give .txt files with one text per line.")
            texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        ids, inputs = texts, texts
    else:
        from .data.coerce import expand_image_paths

        ids = inputs = expand_image_paths(args.paths)
    proba = est.predict_proba(inputs, progress=True)
    top_k = min(args.top_k, len(est.classes_))  # asking for more classes than the model has lists them all
    write_predictions_csv(args.out, list(ids), proba, est.classes_, top_k=top_k)
    print(f"wrote {len(ids)} predictions to {args.out}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from .features import default_cache

    cache = default_cache()
    if args.action == "clear":
        print(f"removed {cache.clear()} cache entries from {cache.root}")
        return 0
    rows, models, heads = cache.entries(), cache.models(), cache.heads()
    print(f"feature cache: {cache.root}")
    if not rows and not models and not heads:
        print("(empty)")
        return 0
    mb = lambda n: f"{n / 1e6:.1f}"  # noqa: E731
    if rows:
        print(f"{'key':12s}  {'backbone':28s} {'layers':10s} {'pooling':7s} {'data':16s} {'n':>7s} {'dim':>6s} "
              f"{'MB':>8s}  created")
        for r in rows:
            layers = "final" if r["layers"] is None else str(r["layers"]).replace(" ", "")
            print(f"{r['key'][:12]:12s}  {r['backbone']:28s} {layers:10s} {str(r['pooling'] or '-'):7s} "
                  f"{str(r['data'] or '-'):16s} {r['n'] or 0:7d} {r['dim'] or 0:6d} {mb(r['bytes']):>8s}  "
                  f"{r['created'] or '-'}")
    if models:
        print("\nexported ONNX models (frozen backbones, reused by every extraction on CPU):")
        print(f"{'key':12s}  {'backbone':28s} {'size':>5s} {'exporter':11s} {'MB':>8s}  created")
        for m in models:
            print(f"{m['key'][:12]:12s}  {m['backbone']:28s} {str(m['image_size'] or '-'):>5s} "
                  f"{str(m['exporter'] or '-'):11s} {mb(m['bytes']):>8s}  {m['created'] or '-'}")
    if heads:
        print(f"\n{len(heads)} fitted heads ({mb(sum(h['bytes'] for h in heads))} MB; reused by a fit on the same "
              "features, labels and settings)")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from .data.builtin import list_datasets

    names = list_datasets()
    width = max(map(len, names))
    for name, desc in names.items():
        print(f"{name:{width}s} {desc}")
    return 0


def _backbones(args: argparse.Namespace) -> int:
    from .backbones import list_backbones

    for name, desc in list_backbones().items():
        print(f"{name:24s} {desc}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from .methods import available_methods
    from .methods.recipes import RECIPES

    for name, desc in available_methods().items():
        print(f"{name:18s} {desc}")
    print("\nrecommended (measured):")
    for setting, recipe in RECIPES.items():
        print(f"  {setting}: {recipe}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    from .data import load_data, resolve_data_arg
    from .io import write_json
    from .ranking import rank_backbones

    if args.out:
        _output(args.out, "file")
    splits = load_data(resolve_data_arg(args.data))
    result = rank_backbones(
        splits, [c for c in args.backbones.split(",") if c.strip()], metrics=args.metrics.split(","),
        max_samples=args.max_samples, seed=args.seed, image_size=args.image_size, engine=args.engine,
        cache=not args.no_cache, progress=True,
    )
    print(result.table())
    what = "highest LogME" if result.recommend_by == "logme" else f"highest {result.recommend_by}"
    print(f"recommended: {result.best} ({what})" if result.best else "recommended: none (no candidate could be scored)")
    if args.out:
        write_json(args.out, result.to_dict())
    return 0


_COMMANDS = {"fit": _fit, "evaluate": _evaluate, "predict": _predict, "cache": _cache, "datasets": _datasets,
             "backbones": _backbones, "methods": _methods}

_COMMANDS["rank"] = _rank


def _compare(args: argparse.Namespace) -> int:
    from .app.compare import run_compare
    from .config import apply_overrides, load_yaml

    cfg = load_yaml(args.config)
    overrides = list(args.overrides)
    if args.out:
        overrides.append(("out", args.out))
    if args.overwrite:
        overrides.append("overwrite=true")
    cfg = apply_overrides(cfg, overrides)
    _output(cfg.out, "folder", what="comparison folder")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run_compare(cfg, methods, list(range(args.seeds)), embedding=args.embedding, jobs=args.jobs,
                         backend=args.backend)
    print(result.table)
    print(f"comparison folder: {result.out}")
    return 0


_COMMANDS["compare"] = _compare


# --- convert: a model of another framework as parity-checked PyTorch weights ----------------------------------------
def _add_convert_parser(sub: typing.Any) -> None:
    cv = sub.add_parser("convert", help="convert an ONNX or Keras model to PyTorch weights, parity-checked")
    cv.add_argument("source", help="a .onnx or .keras file (optionally #<tensor> to cut at), or onnx:/keras: name")
    cv.add_argument("--out", required=True, help="the .safetensors file to write (its .json spec goes beside it)")
    cv.add_argument("--data", help="check parity on a real batch of this data set (default: a seeded batch)")


def _convert(args: argparse.Namespace) -> int:
    from .app.convert import convert

    _output(args.out, "file")
    _output(str(Path(args.out).with_suffix(".json")), "file")
    result = convert(args.source, args.out, data=args.data)
    p = result.parity
    print(f"parity: max abs diff {p['max_abs_diff']:.3g} (<= {p['tol']:g}) against "
          + ", ".join(f"{k} {v:.3g}" for k, v in p.get("checks", {}).items()) + f" on a {p['batch']} batch of {p['n']}")
    print(f"features: {result.feature_dim}; parameters: {result.parameters:,}")
    print(f"wrote {result.weights} and {result.spec}")
    return 0


_COMMANDS["convert"] = _convert


# --- distil: a run with a teacher, teacher and student side by side -------------------------------------------------
def _add_distil_parser(sub: typing.Any) -> None:
    d = sub.add_parser("distil", help="train a student from a teacher; report both side by side")
    d.add_argument("config", help="a YAML run configuration whose method has a teacher (kd, soft-targets, ...)")
    d.add_argument("--teacher", help="the teacher (sets model.method_params.teacher)")
    d.add_argument("--out", help="the run folder to write")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    d.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    d.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def _distil(args: argparse.Namespace) -> int:
    from .app.distil import run_distil
    from .config import apply_overrides, load_yaml

    cfg = load_yaml(args.config)
    overrides: list[typing.Any] = list(args.overrides)
    if args.teacher:
        overrides.append(("model.method_params.teacher", args.teacher))
    if args.out:
        overrides.append(("out", args.out))
    if args.overwrite:
        overrides.append("overwrite=true")
    cfg = apply_overrides(cfg, overrides)
    _output(cfg.out, "folder", what="run folder")
    result = run_distil(cfg, resume=args.resume)
    if not result.run.metrics:
        return 0
    print(result.table)
    print(f"run folder: {result.run.out}")
    return 0


_COMMANDS["distil"] = _distil

def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, not '{text}'") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (the fraction removed), not {value}")
    return value


def _non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, not '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, not {value}")
    return value


def _add_compress_parsers(sub: typing.Any) -> None:
    """The ``export`` and ``compress`` commands (issue 14; :mod:`transferkit.app.export`, :mod:`.app.compress`)."""
    calib = ("int8 calibration of the activation ranges on training examples: minmax (default), percentile or "
             "entropy")
    ex = sub.add_parser("export", help="export a run's model as a self-contained ONNX folder (optionally int8)")
    ex.add_argument("run", help="a run folder (or a folder written by save())")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="the export format (onnx)")
    ex.add_argument("--int8", action="store_true", help="static int8 quantisation (QDQ, per-channel weights)")
    ex.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "entropy"], help=calib)
    ex.add_argument("--calibration-samples", type=_positive_int, default=256,
                    help="training examples the int8 calibration sees (default 256)")
    ex.add_argument("--parity-samples", type=_positive_int, default=256,
                    help="held-out examples of the parity check (default 256)")
    ex.add_argument("--data", help="the data to calibrate and check on (default: the run's own)")
    ex.add_argument("--out", required=True, help="the export folder to write")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    ex.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)

    cm = sub.add_parser("compress", help="prune, recover and quantise a run's model; a table of the trade-off")
    cm.add_argument("run", help="a run folder (its config.yaml names the data and the recipe)")
    cm.add_argument("--prune", type=_fraction, default=0.5, help="fraction to remove (default 0.5)")
    cm.add_argument("--target", default="channels", choices=["channels", "params", "macs"],
                    help="what --prune counts: every layer's channels (default), or the parameter / MAC total")
    cm.add_argument("--importance", default="l2", choices=["l1", "l2", "taylor"],
                    help="which channels go: weight magnitude l1 / l2 (default) or the gradient-based taylor")
    cm.add_argument("--prune-steps", type=_positive_int, default=2,
                    help="prune in this many steps, each but the last recovered for one epoch (default 2: with 5 "
                         "recovery epochs the measured recipe, see BENCHMARKS.md)")
    cm.add_argument("--recover-epochs", type=_non_negative_int, default=5,
                    help="epochs of fine-tuning after the last pruning step, 0 for none (default 5)")
    cm.add_argument("--recover-method", default="kd", choices=["kd", "soft-targets", "finetune"],
                    help="kd: distil from the unpruned model (online) plus labels (default; soft-targets is its old "
                         "name); finetune: labels only")
    cm.add_argument("--lr", type=float, help="learning rate of the recovery, the whole model at one rate (default: "
                    "the run's own; 3e-3 recovered MobileNetV2 best, see BENCHMARKS.md)")
    cm.add_argument("--recover-set", dest="recover_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the recovery's fit config, train.KEY or model.method_params.KEY, as "
                         "fit --set does, e.g. --recover-set model.method_params.alpha=0.7 (repeatable)")
    cm.add_argument("--int8", action="store_true", help="also export the result as static int8 ONNX")
    cm.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "entropy"], help=calib)
    cm.add_argument("--data", help="the data (default: the run's own)")
    cm.add_argument("--seed", type=int, default=0, help="seed of the recovery and of the data samples")
    cm.add_argument("--test-samples", type=_positive_int, help="measure accuracy on a seeded sample of the test split")
    cm.add_argument("--repeats", type=_positive_int, default=10, help="timed runs per latency figure (default 10)")
    cm.add_argument("--out", required=True, help="the compression folder to write")
    cm.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    cm.add_argument("--trust-code", action="store_true", help=_TRUST_HELP)


def _export(args: argparse.Namespace) -> int:
    from .app.export import run_export

    _output(args.out, "folder", what="export folder")
    result = run_export(args.run, args.out, fmt=args.format, int8=args.int8, calibration=args.calibration,
                        calibration_samples=args.calibration_samples, parity_samples=args.parity_samples,
                        data=args.data, overwrite=args.overwrite, trust_code=args.trust_code)
    for kind, p in result.meta["parity"].items():
        print(f"parity {kind}: max abs diff {p['max_abs_diff']:.2e}, top-1 agreement {p['top1_agreement']:.4f}, "
              f"accuracy {p['accuracy_onnx']:.4f} (PyTorch {p['accuracy_torch']:.4f}) on {p['examples']} examples")
    print(f"export folder: {result.out}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from .app.compress import run_compress

    _output(args.out, "folder", what="compression folder")
    result = run_compress(args.run, args.out, prune=args.prune, target=args.target, importance=args.importance,
                          steps=args.prune_steps, recover_epochs=args.recover_epochs,
                          recover_method=args.recover_method, lr=args.lr,
                          recover_overrides=args.recover_overrides, int8=args.int8,
                          calibration=args.calibration, data=args.data, seed=args.seed, overwrite=args.overwrite,
                          test_samples=args.test_samples, repeats=args.repeats,
                          trust_code=args.trust_code)
    print(result.table)
    print(f"compression folder: {result.out}")
    return 0


_COMMANDS["export"] = _export
_COMMANDS["compress"] = _compress
def _serve(args: argparse.Namespace) -> int:
    from .serving import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_request_mb=args.max_request_mb, top_k=args.top_k, batching=not args.no_batching)
    serve(args.model, host=args.host, port=args.port, settings=settings, trust_code=args.trust_code)
    return 0


_COMMANDS["serve"] = _serve
def _report(args: argparse.Namespace) -> int:
    from .report import REPORT, write_report

    out = _output(args.out if args.out else Path(args.folder) / REPORT, "file")
    path = write_report(args.folder, out)
    print(f"report: {path} ({path.stat().st_size / 1000:.0f} kB)")
    return 0


_COMMANDS["report"] = _report
def _ensemble(args: argparse.Namespace) -> int:
    """Thin layer over :mod:`transferkit.app.ensemble`: combine runs (``--how``) or train one (``--strategy``)."""
    from .app.ensemble import ensemble_runs, train_ensemble
    from .errors import ConfigError

    if bool(args.runs) == bool(args.config):
        raise ConfigError("Give either run folders with --how, or --config with --strategy, to `transferkit "
                          "ensemble`.")
    if args.runs:
        if args.how is None or args.data is None:
            raise ConfigError("Combining runs needs --how (average, vote, stack, uniform-soup, greedy-soup) and "
                              "--data (the data set they were trained on).")
        weights = None
        if args.weights:
            try:
                weights = [float(w) for w in args.weights.split(",")]
            except ValueError:
                raise ConfigError(f"--weights must be numbers separated by commas, got '{args.weights}'.") from None
        _output(args.out, "folder", what="ensemble folder")
        result = ensemble_runs(args.runs, how=args.how, out=args.out, data=args.data, split=args.split,
                               fit_split=args.fit_split, weights=weights, overwrite=args.overwrite,
                               trust_code=args.trust_code, soup_bn=args.soup_bn)
    else:
        from .config import apply_overrides, load_yaml

        if args.strategy is None:
            raise ConfigError("Training an ensemble from --config needs --strategy (bagging, boosting, snapshot, "
                              "swa).")
        overrides = [*args.overrides, ("out", args.out)] + (["overwrite=true"] if args.overwrite else [])
        cfg = apply_overrides(load_yaml(args.config), overrides)
        _output(cfg.out, "folder", what="ensemble folder")
        result = train_ensemble(cfg, args.strategy, members=args.members, jobs=args.jobs, backend=args.backend,
                                bootstrap=not args.no_bootstrap)
    print(result.table)
    print(f"ensemble folder: {result.out}")
    return 0


_COMMANDS["ensemble"] = _ensemble

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
