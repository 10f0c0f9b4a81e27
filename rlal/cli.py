"""The ``rlal`` command: argument parsing and error reporting only; the work is done by the library.

Every user error (bad flag, unknown name, missing or corrupt data, invalid config) is printed as one
``error: ...`` line on stderr with exit status 2, never as a traceback; so is a file the system cannot
read or write (a read-only or full disk). Ctrl-C or SIGTERM at any moment, start-up included, ends with
one ``stopped: ...`` line and exit status 130. Warnings of the library's loggers are printed as
``warning: ...`` lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from rlal.errors import RlalError, RunInterrupted

DEMO_CONFIG = "demo"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as our one-line error instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise RlalError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    with _terminate_as_interrupt() as received, _warnings_to_stderr():
        try:
            args = parser.parse_args(argv)
            if not hasattr(args, "run"):
                parser.print_help()
                return 2
            return args.run(args)
        except RunInterrupted as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            return 130
        except RlalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # the system refused a file: read-only, full, no permission, ...
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            # Outside a training loop (which says what it kept): start-up, data loading, eval, export. Every
            # file is written atomically, so nothing is left half-written.
            print(f"stopped: interrupted by {'SIGTERM' if received else 'Ctrl-C'}", file=sys.stderr)
            return 130


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[list[int]]:
    """Treat SIGTERM like Ctrl-C while the command runs, so that it ends with a message and the usual clean-up
    (locks released, temporary files removed) rather than silently with status 143. Yields the list the
    signal numbers received are appended to."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield received
        return

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


class _StderrHandler(logging.Handler):
    """``warning: <message>`` on the current ``sys.stderr`` (looked up at each record: tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    logger = logging.getLogger("rlal")
    handler = _StderrHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlal", description="Train a CNN and prune it to a MACs budget in the same run.")
    sub = parser.add_subparsers(title="commands", parser_class=_Parser)

    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("info", help="parameters, MACs and prunable layers of a zoo or user model")
    p.add_argument("--model", required=True,
                   help="a zoo name, or 'package.module:function' building your nn.Module (imported and run: "
                        "name only code you trust)")
    p.add_argument("--dataset", help="the input size and classes of a dataset (a zoo model needs this or "
                                     "--input-shape)")
    p.add_argument("--input-shape", help="C,H,W of one input, e.g. 3,32,32 (instead of --dataset)")
    p.add_argument("--num-classes", type=int, help="override the dataset's number of classes")
    p.add_argument("--policy", choices=["internal", "all"], default="internal",
                   help="residual policy: prune block-internal channels only (default), or all groups")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("data", help="find and load a dataset, and say what was found")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", help="directory holding the dataset (searched first)")
    p.add_argument("--cache-dir", help="where decoded arrays are cached")
    p.add_argument("--no-download", action="store_true", help="never download")
    p.add_argument("--reward-size", type=int,
                   help="training images held out for rewards (default: sized from the data, 10%% with a "
                        "floor of 500 and a cap of 5,000)")
    p.add_argument("--input-size", type=int, help="image folders: the side the images are read at (default: "
                                                  "their own size when they share one, else 224)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("train", help="train a model (see --method), or continue a stopped run (--resume)")
    _add_run_arguments(p)
    p.add_argument("--out", type=Path, help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last epoch checkpoint, with its saved config")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("report", help="write (again) a run directory's report.md, plots and widths table")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("demo", help="the README's main job (ResNet-20 on Fashion-MNIST)")
    _add_run_arguments(p, with_method=False)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("eval", help="test accuracy, MACs, params and CPU latency of a saved pruned model")
    p.add_argument("path", type=Path, metavar="PATH", help="a pruned model directory, or a run directory")
    p.add_argument("--dataset", help="dataset to test on (default: the run's config.yaml)")
    p.add_argument("--data-dir", help="dataset directory (default: the run's, then the usual places)")
    p.add_argument("--batch", type=int, help="evaluation batch size (default: the run's eval_batch_size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N for the accuracy pass; "
                   "latency is always measured on the CPU")
    _add_latency_arguments(p, batches=False)
    _add_trust_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("export", help="export a saved pruned model to ONNX")
    p.add_argument("path", type=Path, metavar="PRUNED", help="a pruned model directory, or a run directory")
    p.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; >= 18 uses the dynamo "
                   "exporter)")
    _add_trust_argument(p)
    p.set_defaults(run=cmd_export)

    bench_parser = sub.add_parser("bench", help="benchmarks of saved models (see `rlal bench --help`)")
    bench_parser.set_defaults(run=lambda args: _print_help(bench_parser))
    bench = bench_parser.add_subparsers(title="benchmarks", parser_class=_Parser)
    p = bench.add_parser("latency", help="dense vs pruned latency next to the MACs ratio")
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                   help="pruned model directories or run directories")
    _add_latency_arguments(p, batches=True)
    p.add_argument("--onnx", action="store_true", help="also time both models in ONNX Runtime on the CPU")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA figures even when a GPU is present")
    p.add_argument("--no-predict", action="store_true",
                   help="skip the latency table's prediction (it times every conv at the widths the run "
                        "allows)")
    _add_trust_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_bench_latency)

    p = bench.add_parser("quality", help="every method on the same track; writes docs/results/NAME.md")
    p.add_argument("--config", required=True, help="the track: an rlal YAML config, path or shipped name")
    p.add_argument("--methods", default="dense,uniform,magnitude,depgraph,rlal,random-search,"
                   "sac-no-dynamics,no-align", help="comma-separated rows (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--name", help="table name (default: the config's name without 'bench-')")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench"), help="where the runs go")
    p.add_argument("--results-dir", type=Path, default=Path("docs/results"), help="where the table goes")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the track's config for every method")
    p.add_argument("--note", default="", help="a line to state in the table (e.g. how the cores were shared)")
    p.add_argument("--no-run", action="store_true",
                   help="run nothing: write the table from the finished runs here and the table's records")
    p.set_defaults(run=cmd_bench_quality)
    return parser


def _add_latency_arguments(p: argparse.ArgumentParser, batches: bool) -> None:
    if batches:
        p.add_argument("--batch", default="1,64", metavar="N,N", help="batch sizes to time (default 1,64)")
    p.add_argument("--threads", type=int, help="CPU threads for timing (default: torch's default)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    p.add_argument("--runs", type=int, default=50, help="timed calls; the median is reported (default 50)")


def _add_trust_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-factory", action="store_true",
                   help="allow a spec that names a factory ('module:function') to import and run it; "
                        "the module must be installed or on PYTHONPATH (never the current directory)")


def _add_run_arguments(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    p.add_argument("--config", help="YAML run config: a path, or the name of a shipped config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 (repeatable; applied last)")
    if with_method:
        p.add_argument("--method", help="training method (config key method)")
    p.add_argument("--model", help="zoo model name, or package.module:function building your own model "
                                   "(imported and run: name only code you trust) (model.name)")
    p.add_argument("--dataset", help="dataset name (data.dataset)")
    p.add_argument("--data-dir", help="dataset directory (data.data_dir)")
    p.add_argument("--epochs", help="total epochs (train.epochs)")
    p.add_argument("--seed", help="random seed (seed)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (train.device)")


_SHORTHANDS = {
    "method": "method", "model": "model.name", "dataset": "data.dataset", "data_dir": "data.data_dir",
    "epochs": "train.epochs", "seed": "seed", "device": "train.device",
}


def _run_config(args: argparse.Namespace, default_config: str | None = None):
    from rlal.config import load_config, resolve_config_path

    config_name = args.config or default_config
    path = resolve_config_path(config_name) if config_name else None
    shorthands = [
        f"{key}={value}" for attr, key in _SHORTHANDS.items()
        if (value := getattr(args, attr, None)) is not None
    ]
    return load_config(path, shorthands + args.overrides)


def cmd_models(args: argparse.Namespace) -> int:
    from rlal.models import list_models, model_entry

    entries = [model_entry(name) for name in list_models()]
    if args.json:
        rows = [{"name": e.name, "family": e.family, "description": e.description} for e in entries]
        print(json.dumps(rows))
    else:
        width = max(len(e.name) for e in entries)
        for e in entries:
            print(f"{e.name:<{width}}  {e.family:<8}  {e.description}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rlal.data import dataset_spec
    from rlal.models import create_model
    from rlal.structure import ArchSpec, describe_layers, describe_lines
    from rlal.structure.io import check_zoo_sizes

    if (args.dataset is None) == (args.input_shape is None):
        raise RlalError("rlal info needs exactly one of --dataset and --input-shape")
    if args.dataset is not None:
        spec = dataset_spec(args.dataset)
        shape, source = (spec.in_channels, spec.input_size, spec.input_size), spec.name
        classes = spec.num_classes
    else:
        shape, source, classes = _input_shape(args.input_shape), "input", 10
    num_classes = args.num_classes if args.num_classes is not None else classes
    if ":" in args.model:  # the user named this factory on the command line: running it is their choice
        model = ArchSpec.from_factory(args.model).build(trust_factory=True)
    else:
        kwargs = {"num_classes": num_classes, "in_channels": shape[0], "input_size": shape[-1]}
        check_zoo_sizes(kwargs)  # before a classifier of a billion rows is allocated
        model = create_model(args.model, **kwargs)
    layers = describe_layers(model, shape, policy=args.policy)
    info: dict[str, Any] = {
        "model": args.model, "dataset": source, "input_shape": list(shape), "num_classes": num_classes,
        "params": layers["dense_params"], "macs": layers["dense_macs"], "policy": args.policy,
        "prunable_layers": layers["prunable_layers"], "skipped": layers["skipped"],
        "skipped_macs_share": layers["skipped_macs_share"],
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.model} on {source} {shape}: {info['params'] / 1e6:.3f} M params, "
          f"{info['macs'] / 1e6:.1f} M MACs")
    for line in describe_lines(layers):
        print(line)
    return 0


def _input_shape(text: str) -> tuple[int, ...]:
    """``C,H,W`` as positive ints within the sizes rlal traces (a one-line error otherwise)."""
    from rlal.structure.io import check_input_size
    from rlal.structure.trace import check_input_shape

    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3:
        raise RlalError(f"--input-shape must be C,H,W, e.g. 3,32,32, got {text!r}")
    check_input_size(check_input_shape(dims))
    return dims


def cmd_data(args: argparse.Namespace) -> int:
    import torch

    from rlal.config import load_config
    from rlal.data import build_data

    # data.workers=0: counting the images iterates no loader, so no worker processes are needed.
    overrides = [f"data.dataset={args.dataset}", f"data.download={str(not args.no_download).lower()}",
                 "data.workers=0"]
    given = {"data_dir": args.data_dir, "cache_dir": args.cache_dir, "reward_size": args.reward_size,
             "input_size": args.input_size}
    overrides += [f"data.{key}={value}" for key, value in given.items() if value is not None]
    cfg = load_config(None, overrides).data
    data = build_data(cfg, torch.device("cpu"), seed=0, need_reward=False)
    info = {
        "dataset": data.spec.name, "source": data.source, "classes": list(data.classes),
        "train": data.train.num_samples, "reward": data.reward.num_samples, "test": data.test.num_samples,
        "input_shape": [data.spec.in_channels, data.spec.input_size, data.spec.input_size],
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{data.spec.name} from {data.source}: {info['train']} train + {info['reward']} reward "
              f"(held out of train) + {info['test']} test images, {len(data.classes)} classes")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume is not None:
        names = ("config", "out", *_SHORTHANDS)
        given = [f"--{a.replace('_', '-')}" for a in names if getattr(args, a, None) is not None]
        if given or args.overrides or args.overwrite:
            raise RlalError(
                f"--resume continues a run with the config saved in it: drop {(given or ['--set'])[0]}"
            )
        from rlal.rundir import check_resumable, load_run_config

        config, out, resume = load_run_config(args.resume), args.resume, True
        check_resumable(out)  # before minutes of data loading: a run that cannot continue says so now
    else:
        if args.out is None:
            raise RlalError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        config, out, resume = _run_config(args), args.out, False
        from rlal.rundir import check_run_dir

        check_run_dir(out, overwrite=args.overwrite)  # before minutes of data loading, not after
    from rlal.train.distributed import close, is_main_process
    from rlal.train.result import PrunedResult
    from rlal.train.run import fit

    if os.environ.get("RANK", "0") != "0":  # under torchrun the ranks share the warnings: rank 0 prints them
        logging.getLogger("rlal").setLevel(logging.ERROR)
    try:  # under torchrun: every rank runs this; rank 0 writes the run and prints its summary
        r = fit(config, out, overwrite=args.overwrite, resume=resume)
        if not is_main_process():
            return 0
    finally:
        close()
    pruned = ""
    if isinstance(r, PrunedResult):
        pruned = f"{r.method}: pruned to {r.macs / r.dense_macs:.1%} of the dense MACs, "
    print(f"{pruned}test accuracy {r.test_acc:.2f}% after {r.epochs} epochs ({r.seconds:.0f} s); "
          f"run saved in {r.run_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlal.report.markdown import write_report

    print(f"report written to {write_report(args.run_dir)}")
    return 0


def cmd_bench_quality(args: argparse.Namespace) -> int:
    from rlal.benchmark import parse_methods, parse_seeds, run_quality_bench
    from rlal.config import resolve_config_path

    methods, seeds = parse_methods(args.methods), parse_seeds(args.seeds)
    path = resolve_config_path(args.config)
    name = args.name or path.stem.removeprefix("bench-")
    table = run_quality_bench(path, name, methods, seeds, args.runs_dir, args.results_dir, args.overrides,
                              log=lambda line: print(line, flush=True), note=args.note, run=not args.no_run)
    print(f"table: {table}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = _run_config(args, default_config=DEMO_CONFIG)
    if config.method != "rlal":
        raise RlalError("the demo runs the joint method: its config must keep method: rlal")
    from rlal.rundir import check_run_dir, run_lock
    from rlal.train.joint import fit_joint

    check_run_dir(args.out, overwrite=args.overwrite)  # an earlier demo run is replaced only when asked
    print(
        f"rlal demo: training {config.model.name} on {config.data.dataset} from scratch and pruning it to "
        f"{config.env.describe_budget()} in the same run ({config.train.epochs} epochs on "
        f"{config.data.train_subset or 'all'} training images).",
        flush=True,
    )
    with run_lock(args.out):
        result = fit_joint(config, args.out, overwrite=args.overwrite)
    rows = [
        ("", "dense", "pruned"),
        ("MACs", f"{result.dense_macs / 1e6:.2f} M", f"{result.macs / 1e6:.2f} M "
         f"({result.macs / result.dense_macs:.1%})"),
        ("params", f"{result.dense_params / 1e6:.3f} M", f"{result.params / 1e6:.3f} M "
         f"({result.params / result.dense_params:.1%})"),
        ("test accuracy", "(not trained)", f"{result.test_acc:.2f}%"),
    ]
    print()
    for name, dense, pruned in rows:
        print(f"  {name:<14} {dense:>14}  {pruned}")
    print(f"\n  wall-clock {result.seconds:.0f} s; run directory {result.run_dir}, "
          f"pruned model in {result.run_dir / 'pruned'} (load with rlal.load_pruned)")
    print(f"  report: {result.run_dir / 'report.md'}")
    return 0


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        if threads < 1:
            raise RlalError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def _latency_text(figure: dict[str, Any]) -> str:
    return f"{figure['median_ms']:.2f} ms ({figure['p10_ms']:.2f}-{figure['p90_ms']:.2f})"


def cmd_eval(args: argparse.Namespace) -> int:
    from rlal.evaluate import evaluate_pruned

    _set_threads(args.threads)
    info = evaluate_pruned(args.path, dataset=args.dataset, data_dir=args.data_dir, batch=args.batch,
                           device=args.device, warmup=args.warmup, runs=args.runs,
                           trust_factory=args.trust_factory)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['path']}: {info['model']} on {info['dataset']} {tuple(info['input_shape'])}")
    recorded = "recorded by the run: its images were tensors in memory"
    where = recorded if info["test_recorded"] else info["device"]
    print(f"  test accuracy  {info['test_acc']:.2f}% on {info['test_images']} images ({where})")
    print(f"  MACs           {info['macs'] / 1e6:.2f} M ({info['macs_ratio']:.1%} of the dense "
          f"{info['dense_macs'] / 1e6:.2f} M)")
    params, dense_params = info["params"], info["dense_params"]
    print(f"  params         {params / 1e6:.3f} M ({params / dense_params:.1%} of the dense "
          f"{dense_params / 1e6:.3f} M)")
    for figure in info["latency_cpu"]:
        print(f"  CPU latency    batch {figure['batch']:>3}: {_latency_text(figure)} median (p10-p90) "
              f"over {figure['runs']} runs, {figure['threads']} thread(s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rlal.evaluate import open_pruned
    from rlal.export import export_onnx

    saved = open_pruned(args.path, trust_factory=args.trust_factory)
    path = export_onnx(saved.model, saved.input_shape, args.onnx, args.opset)
    shape = ", ".join(map(str, saved.input_shape))
    print(f"wrote {path} (opset {args.opset}, input 'input' [batch, {shape}], output 'logits')")
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    import torch

    from rlal.evaluate import bench_pruned
    from rlal.export import environment

    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise RlalError(f"--batch must be a comma-separated list of integers, got {args.batch!r}") from None
    if not batches or min(batches) < 1:
        raise RlalError(f"--batch sizes must be >= 1, got {args.batch!r}")
    _set_threads(args.threads)
    backends = ["torch-cpu"]
    if args.onnx:
        for module in ("onnx", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                raise RlalError(f"--onnx needs {module}: pip install 'rlal[export]'") from None
        backends.append("onnxruntime-cpu")
    if torch.cuda.is_available() and not args.no_cuda:
        backends.append("torch-cuda")
    env = environment()
    models = [bench_pruned(path, batches=batches, backends=backends, warmup=args.warmup, runs=args.runs,
                           trust_factory=args.trust_factory, predict=not args.no_predict)
              for path in args.models]
    if args.json:
        print(json.dumps({**env, "warmup": args.warmup, "runs": args.runs, "models": models}))
        return 0
    print(f"{env['cpu']}, {env['threads']} thread(s); torch {env['torch']}"
          + (f", onnxruntime {env['onnxruntime']}" if args.onnx else "")
          + (f"; GPU {env['cuda']}" if "torch-cuda" in backends else "")
          + f"; median of {args.runs} timed calls after {args.warmup} warm-up calls, ms per batch (p10-p90)")
    for m in models:
        print(f"\n{m['path']}: {m['model']} {tuple(m['input_shape'])}, MACs {m['dense_macs'] / 1e6:.2f} M -> "
              f"{m['macs'] / 1e6:.2f} M ({m['macs'] / m['dense_macs']:.1%}), ideal speed-up "
              f"{m['ideal_speedup']:.2f}x")
        print(f"  {'backend':<16} {'batch':>5}  {'dense':<26} {'pruned':<26} {'speed-up':>8}  of ideal"
              + ("" if args.no_predict else "  predicted (error)"))
        for row in m["latency"]:
            predicted = ("" if args.no_predict
                         else "  missing (no table)" if row["predicted_speedup"] is None
                         else f"  {row['predicted_speedup']:>7.2f}x ({row['prediction_error']:+.0%})")
            print(f"  {row['backend']:<16} {row['batch']:>5}  {_latency_text(row['dense']):<26} "
                  f"{_latency_text(row['pruned']):<26} {row['speedup']:>7.2f}x  {row['of_ideal']:>7.0%}"
                  + predicted)
    return 0


if __name__ == "__main__":
    from rlal import drop_working_dir_from_sys_path

    drop_working_dir_from_sys_path()
    sys.exit(main())
