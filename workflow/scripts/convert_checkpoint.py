"""Snakemake script: convert the latest checkpoint of a run (rule convert)."""

from pathlib import Path

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.convert_checkpoint import convert, latest_model_dir


def main(sm) -> None:
    model_dir = latest_model_dir(sm.params.checkpoints)
    written = convert(model_dir, model_dir.parent)
    Path(sm.output[0]).write_text(f"{written['ema_bf16']}\n", encoding="utf-8")


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
