"""The ``rlal`` command: argument parsing and error reporting only; the work is done by the library.

Every user error (bad flag, unknown name, missing or corrupt data, invalid config) is printed as one
``error: ...`` line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from rlal.errors import RlalError

DEMO_CONFIG = "demo"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as our one-line error instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise RlalError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "run"):
            parser.print_help()
            return 2
        return args.run(args)
    except RlalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlal", description="Train a CNN and prune it to a MACs budget in the same run.")
    sub = parser.add_subparsers(title="commands", parser_class=_Parser)

    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("info", help="parameters and MACs of a zoo model at a dataset's input size")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
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
    p.add_argument("--reward-size", type=int, default=5000, help="training images held out for rewards")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("train", help="train a model (see --method)")
    _add_run_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("demo", help="the README's main job (ResNet-20 on Fashion-MNIST)")
    _add_run_arguments(p, with_method=False)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    p.set_defaults(run=cmd_demo)
    return parser


def _add_run_arguments(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    p.add_argument("--config", help="YAML run config: a path, or the name of a shipped config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 (repeatable; applied last)")
    if with_method:
        p.add_argument("--method", help="training method (config key method)")
    p.add_argument("--model", help="zoo model name (model.name)")
    p.add_argument("--dataset", help="dataset name (data.dataset)")
    p.add_argument("--data-dir", help="dataset directory (data.data_dir)")
    p.add_argument("--epochs", help="total epochs (train.epochs)")
    p.add_argument("--seed", help="random seed (seed)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (train.device)")


_SHORTHANDS = {
    "method": "method", "model": "model.name", "dataset": "data.dataset", "data_dir": "data.data_dir",
    "epochs": "train.epochs", "seed": "seed", "device": "train.device",
}


def resolve_config_path(name: str) -> Path:
    """A config path, or the name of a config shipped with rlal (``rlal/configs/NAME.yaml``)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = resources.files("rlal") / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    available = ", ".join(shipped_configs())
    raise RlalError(f"config {name!r} is neither a file nor a shipped config (shipped: {available})")


def shipped_configs() -> list[str]:
    folder = resources.files("rlal") / "configs"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _run_config(args: argparse.Namespace, default_config: str | None = None):
    from rlal.config import load_config

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
    from rlal.structure import describe_layers

    spec = dataset_spec(args.dataset)
    num_classes = args.num_classes if args.num_classes is not None else spec.num_classes
    model = create_model(
        args.model, num_classes=num_classes, in_channels=spec.in_channels, input_size=spec.input_size
    )
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    layers = describe_layers(model, shape, policy=args.policy)
    info: dict[str, Any] = {
        "model": args.model, "dataset": spec.name, "input_shape": list(shape), "num_classes": num_classes,
        "params": layers["dense_params"], "macs": layers["dense_macs"], "policy": args.policy,
        "prunable_layers": layers["prunable_layers"], "skipped": layers["skipped"],
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.model} on {spec.name} {shape}: {info['params'] / 1e6:.3f} M params, "
          f"{info['macs'] / 1e6:.1f} M MACs")
    n_layers = len(info["prunable_layers"])
    print(f"{n_layers} prunable layers (policy {args.policy}); a keep ratio counts channels:")
    for layer in info["prunable_layers"]:
        print(f"  {layer['name']:<32} {layer['channels']:>5} channels  {layer['macs'] / 1e6:8.2f} M MACs")
    for item in info["skipped"]:
        print(f"  skipped {item['module']}: {item['reason']}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import torch

    from rlal.config import load_config
    from rlal.data import build_data

    overrides = [f"data.dataset={args.dataset}", f"data.reward_size={args.reward_size}",
                 f"data.download={str(not args.no_download).lower()}"]
    overrides += [f"data.{key}={value}" for key, value in
                  (("data_dir", args.data_dir), ("cache_dir", args.cache_dir)) if value is not None]
    cfg = load_config(None, overrides).data
    data = build_data(cfg, torch.device("cpu"), seed=0)
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
    config = _run_config(args)
    if config.method == "dense":
        from rlal.train.dense import fit_dense

        result = fit_dense(config, args.out, overwrite=args.overwrite)
        print(f"test accuracy {result.test_acc:.2f}% ({result.seconds:.0f} s); run saved in {result.run_dir}")
        return 0
    from rlal.train.joint import fit_joint

    joint = fit_joint(config, args.out, overwrite=args.overwrite)
    print(f"pruned to {joint.macs / joint.dense_macs:.1%} of the dense MACs, "
          f"test accuracy {joint.test_acc:.2f}% ({joint.seconds:.0f} s); run saved in {joint.run_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = _run_config(args, default_config=DEMO_CONFIG)
    if config.method != "rlal":
        raise RlalError("the demo runs the joint method: its config must keep method: rlal")
    from rlal.train.joint import fit_joint

    print(
        f"rlal demo: training {config.model.name} on {config.data.dataset} from scratch and pruning it to "
        f"{config.env.target_macs:g} of its MACs in the same run ({config.train.epochs} epochs on "
        f"{config.data.train_subset or 'all'} training images).",
        flush=True,
    )
    result = fit_joint(config, args.out, overwrite=True)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
