"""Snakemake script: say what the demo chain produced (rule demo)."""

import json
from pathlib import Path

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.demo_eval import summary


def main(sm) -> None:
    manifest = Path(sm.input.manifest)
    clips = len(manifest.read_text(encoding="utf-8").splitlines()) - 1
    result = json.loads(Path(sm.input.evaluation).read_text(encoding="utf-8"))
    text = (
        f"demo dataset: {clips} clips validated; manifest {manifest.resolve()}\n"
        f"post-training: {summary(result)}\n"
        f"checkpoint: {result['checkpoint']}\n"
        f"videos (input | control | base alone | with control): {result['videos']}\n"
        f"converted: {Path(sm.input.converted).read_text(encoding='utf-8').strip()}\n"
        f"inference outputs:\n{Path(sm.input.inference).read_text(encoding='utf-8')}"
    )
    Path(sm.output[0]).write_text(text, encoding="utf-8")
    print(text, end="")


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
