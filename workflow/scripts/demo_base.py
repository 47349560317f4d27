"""Snakemake script: pre-train the tiny base model for the demo (rule demo_base)."""

from cosmos_posttrain.base_pretrain import pretrain_base
from cosmos_posttrain.cli import run_snakemake_job


def main(sm) -> None:
    p = sm.params
    pretrain_base(p.dataset_dir, sm.output[0], p.iterations, seed=p.seed, num_frames=p.num_frames)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
