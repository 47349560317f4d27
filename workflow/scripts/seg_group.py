"""Snakemake script: segmentation videos for one group of clips (rule seg_group)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.control_jobs import seg_group
from cosmos_posttrain.gpus import claim_gpus


def main(sm) -> None:
    claim_gpus(sm.resources.gpu)  # GPUs no other job holds, before CUDA starts
    seg_group(sm)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
