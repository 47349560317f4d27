"""Snakemake script: depth videos for one group of clips, the model loaded once (depth_group)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.control_jobs import depth_group
from cosmos_posttrain.gpus import claim_gpus


def main(sm) -> None:
    claim_gpus(sm.resources.gpu)  # GPUs no other job holds, before CUDA starts
    depth_group(sm)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
