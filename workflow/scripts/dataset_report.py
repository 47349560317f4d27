"""Snakemake script: the manifest as a table and its histograms (rule dataset_report)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.report_pages import manifest_page
from cosmos_posttrain.report_plots import dataset_histograms


def main(sm) -> None:
    manifest_page(sm.input[0], sm.output.table)
    dataset_histograms(sm.input[0], sm.output.frames, sm.output.durations, sm.output.resolutions)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
