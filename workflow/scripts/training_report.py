"""Snakemake script: loss and learning-rate curves and the samples of a run (rule
training_report)."""

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.report_pages import gallery_page, training_samples
from cosmos_posttrain.report_plots import training_curves


def main(sm) -> None:
    control = sm.wildcards.control
    training_curves(sm.params.run_dir, sm.output.loss, sm.output.lr, f"({control})")
    gallery_page(
        training_samples(sm.params.run_dir),
        sm.output.samples,
        f"Samples taken while training the {control} branch",
        empty_note="No samples: the run was trained with trainer.sample_every=0.",
    )


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
