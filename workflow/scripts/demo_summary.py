"""Snakemake script: say what the demo chain produced (rule demo)."""

from pathlib import Path

from cosmos_posttrain.cli import run_snakemake_job


def main(sm) -> None:
    manifest = Path(sm.input[0])
    clips = len(manifest.read_text(encoding="utf-8").splitlines()) - 1
    text = f"demo dataset: {clips} clips validated; manifest {manifest.resolve()}\n"
    Path(sm.output[0]).write_text(text, encoding="utf-8")
    print(text, end="")


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
