"""Snakemake script: measure whether the demo learned (rule demo_eval)."""

from pathlib import Path

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.demo_eval import evaluate, summary


def main(sm) -> None:
    out_dir = Path(sm.output[0]).parent
    result = evaluate(
        sm.params.dataset_dir, sm.input.base, sm.params.run_dir, out_dir, preset=sm.params.preset
    )
    print(summary(result))


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
