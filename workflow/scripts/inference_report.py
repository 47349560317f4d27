"""Snakemake script: the inference outputs as one video page (rule inference_report)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.report_pages import gallery_page, inference_videos


def main(sm) -> None:
    gallery_page(
        inference_videos(sm.input[0]),
        sm.output[0],
        f"Generated with the fine-tuned {sm.wildcards.control} branch",
        empty_note="The inference step listed no videos.",
    )


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
