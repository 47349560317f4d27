"""`torchrun ... -m cosmos_posttrain.train --config=cosmos_transfer2/singleview_config.py --
experiment=... key=value ...`: the seed's training command."""

from __future__ import annotations

import argparse
import sys

from .cli import run_cli, split_overrides
from .experiments import build_config


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv, overrides = split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        default="cosmos_transfer2/singleview_config.py",
        help="the single-view config (the reference's path is accepted)",
    )
    p.add_argument("--dryrun", action="store_true", help="print the resolved config and stop")
    p.add_argument("overrides", nargs="*", help="key=value overrides (also accepted after --)")
    args = p.parse_args(argv)
    return args, [*args.overrides, *overrides]


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)

    def action() -> None:
        from omegaconf import OmegaConf

        config = build_config(overrides, args.config)
        if args.dryrun:
            print(OmegaConf.to_yaml(config))
            return
        from .trainer import train

        train(config)

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
