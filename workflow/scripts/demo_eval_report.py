"""Snakemake script: the demo's edge agreement as a table and a chart (rule demo_eval_report)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.report_pages import eval_page
from cosmos_posttrain.report_plots import eval_chart


def main(sm) -> None:
    eval_page(sm.input[0], sm.output.table)
    eval_chart(sm.input[0], sm.output.chart)


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
