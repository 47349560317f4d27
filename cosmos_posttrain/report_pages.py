"""The report's tables and video galleries as self-contained HTML pages.

Snakemake's report shows PNG and HTML results inline but offers an mp4 or a TSV only as a
download. So tables become HTML tables and videos become HTML pages with `<video>` elements
whose sources are data: URIs: one file, playable in the report, nothing to fetch.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .fsutil import write_text_atomic
from .report_plots import read_manifest

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem; color: #222; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
figure { display: inline-block; margin: 0 1rem 1.2rem 0; vertical-align: top; }
figcaption { font-size: 0.85rem; max-width: 40rem; }
video { width: 36rem; max-width: 100%; background: #000; image-rendering: pixelated; }
p.note { color: #555; }
"""


@dataclass(frozen=True)
class Video:
    """One video of a gallery: its file and what to print under it."""

    path: Path
    title: str
    caption: str = ""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n"
    )


def data_uri(path: str | os.PathLike[str], mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def table_html(rows: list[dict], columns: list[str], text_columns: tuple[str, ...] = ()) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f"<td{' class=text' if c in text_columns else ''}>{html.escape(str(row[c]))}</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def manifest_page(manifest: str | os.PathLike[str], out_html: str | os.PathLike[str]) -> Path:
    """The dataset manifest (one row per clip) as an HTML table."""
    table = read_manifest(manifest)
    summary = (
        f"<p>{len(table)} clips, {int(table['frames'].sum())} frames, "
        f"{float(table['duration_s'].sum()):.1f} s in all.</p>"
    )
    rows = table.to_dict("records")
    body = summary + table_html(rows, list(table.columns), ("id", "controls"))
    write_text_atomic(out_html, _page("Dataset manifest", body))
    return Path(out_html)


def gallery_page(
    videos: list[Video], out_html: str | os.PathLike[str], title: str, empty_note: str = ""
) -> Path:
    """Each video embedded as a data: URI in a `<video>` element, with its title and caption."""
    figures = []
    for video in videos:
        caption = f"<br>{html.escape(video.caption)}" if video.caption else ""
        figures.append(
            f'<figure><video controls loop muted preload="metadata" '
            f'src="{data_uri(video.path, "video/mp4")}"></video>'
            f"<figcaption><b>{html.escape(video.title)}</b>{caption}</figcaption></figure>"
        )
    body = "\n".join(figures) or f'<p class="note">{html.escape(empty_note)}</p>'
    write_text_atomic(out_html, _page(title, body))
    return Path(out_html)


def training_samples(run_dir: str | os.PathLike[str]) -> list[Video]:
    """The trainer's `samples/iter_<n>_{reg,ema}.mp4`, by iteration."""
    found = []
    for path in (Path(run_dir) / "samples").glob("iter_*_*.mp4"):
        iteration, weights = path.stem.removeprefix("iter_").split("_", 1)
        found.append((int(iteration), weights != "reg", weights, path))
    videos = []
    for iteration, _, weights, path in sorted(found):
        which = "EMA weights" if weights == "ema" else "current weights"
        videos.append(Video(path, f"iteration {iteration}, {which}", "input | control | generated"))
    return videos


def inference_videos(listing: str | os.PathLike[str]) -> list[Video]:
    """The videos named in the inference rule's done.txt, with each entry's prompt."""
    videos = []
    for line in Path(listing).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        path = Path(line.strip())
        spec_file = path.with_suffix(".json")
        caption = ""
        if spec_file.is_file():
            spec = json.loads(spec_file.read_text(encoding="utf-8"))
            caption = f"prompt: {spec.get('prompt', '')}"
        elif "_control_" in path.stem:
            caption = "the control the entry was generated with"
        videos.append(Video(path, path.stem, caption))
    return videos


def eval_page(eval_json: str | os.PathLike[str], out_html: str | os.PathLike[str]) -> Path:
    """The demo's measurements: loss, edge agreement with and without the branch, swap test."""
    r = json.loads(Path(eval_json).read_text(encoding="utf-8"))

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    summary = [
        {"measure": "loss, first 10% of iterations", "value": num(r["loss_first_10pct"])},
        {"measure": "loss, last 10% of iterations", "value": num(r["loss_last_10pct"])},
        {"measure": "edge F1, base alone", "value": num(r["edge_f1_base_alone"])},
        {"measure": "edge F1, with the trained branch", "value": num(r["edge_f1_with_control"])},
        {"measure": "ratio", "value": f"{r['f1_ratio']:.2f}x"},
        {
            "measure": "swap test: F1 against the given control",
            "value": num(r["swap_f1_given_control"]),
        },
        {
            "measure": "swap test: F1 against the clip's own edges",
            "value": num(r["swap_f1_own_edges"]),
        },
    ]
    verdict = (
        f"Loss {'falls' if r['loss_falls'] else 'does NOT fall'}; the branch "
        f"{'follows' if r['swap_follows_control'] else 'does NOT follow'} a swapped control."
    )
    per_clip = [
        {"clip": c, "base alone": num(v["base"]), "with the branch": num(v["control"])}
        for c, v in sorted(r["per_clip"].items())
    ]
    body = (
        f"<p>{html.escape(verdict)} Edge preset {html.escape(str(r.get('preset', 'medium')))}."
        "</p>"
        + table_html(summary, ["measure", "value"], ("measure",))
        + "<h3>Per clip</h3>"
        + table_html(per_clip, ["clip", "base alone", "with the branch"], ("clip",))
    )
    write_text_atomic(out_html, _page("Demo evaluation: edge agreement", body))
    return Path(out_html)
