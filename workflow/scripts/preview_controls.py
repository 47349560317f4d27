"""Snakemake script: control previews for the first clips (rule preview_controls)."""

from pathlib import Path

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.previews import write_previews
from cosmos_posttrain.report_pages import Video, gallery_page


def main(sm) -> None:
    ids = sorted(p.stem for p in (Path(sm.params.dataset_dir) / "videos").glob("*.mp4"))
    written = write_previews(
        sm.params.dataset_dir, ids[: sm.params.clips], Path(sm.output.sheet).parent
    )
    gallery_page(
        [Video(v, v.stem, "source | edge | vis | depth | seg") for v in written["videos"]],
        sm.output.videos,
        "Control previews",
    )
    print(f"previews: {written['sheet'][0]} and {len(written['videos'])} videos")


run_snakemake_job(snakemake.log[0], lambda: main(snakemake))  # noqa: F821
