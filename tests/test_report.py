"""The Snakemake report of a small real run, opened in headless Chromium: every figure and video
it names is embedded and decodes, and its React app renders."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import run_snakemake, write_dataset

from cosmos_posttrain.report_pages import Video, eval_page, gallery_page, manifest_page
from cosmos_posttrain.report_plots import dataset_histograms, eval_chart, read_scalars
from cosmos_posttrain.video_io import probe_video

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
]

RUN_SUBDIR = (
    "cosmos_transfer2_posttrain/local_single_view/transfer2_singleview_posttrain_edge_example"
)
EXPECTED = {
    # name in the report -> (category, mime type)
    "manifest.html": ("1. Dataset", "text/html"),
    "frames.png": ("1. Dataset", "image/png"),
    "durations.png": ("1. Dataset", "image/png"),
    "resolutions.png": ("1. Dataset", "image/png"),
    "contact_sheet.png": ("2. Control previews", "image/png"),
    "previews.html": ("2. Control previews", "text/html"),
    "loss.png": ("3. Post-training", "image/png"),
    "learning_rate.png": ("3. Post-training", "image/png"),
    "samples.html": ("3. Post-training", "text/html"),
    "edge.html": ("4. Inference", "text/html"),
    "eval.html": ("5. Demo evaluation", "text/html"),
    "edge_f1.png": ("5. Demo evaluation", "image/png"),
}


def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root (as on CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"chromium could not be installed: {' '.join(cmd)}: {done.stderr[-500:]}")
    return shutil.which("chromium") or pytest.skip("apt-get installed no chromium binary")


def dump_dom(browser: str, page: Path, profile: Path, budget_ms: int = 20000) -> str:
    """The DOM after the page's scripts ran (a fresh profile, no network lookups)."""
    done = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Sources(HTMLParser):
    """Every src/href of a page, by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.found.append((tag, value))


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:([^;,]+)(?:;[^;,=]+=[^;,]*)*;base64,(.*)", uri, re.S)
    assert match, uri[:80]
    return match.group(1), base64.b64decode(match.group(2), validate=True)


def report_results(dom: str) -> dict:
    """The report's `results` table, as the browser holds it."""
    match = re.search(r"var results = (\{.*?\});\s*</script>", dom, re.S)
    assert match, "no results table in the rendered report"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, make_clip) -> Path:
    """Dataset, base, 4 training iterations with samples, conversion, inference, evaluation,
    previews and the report, through the workflow's `demo` target."""
    root = tmp_path_factory.mktemp("report")
    clips = {f"c{i}": (make_clip(20, offset=10 * i), f"a street scene {i}") for i in range(2)}
    data = write_dataset(root / "ds", clips)
    spec = root / "spec.jsonl"
    entry = {
        "name": "street",
        "prompt": "a street at dusk",
        "video_path": str(data / "videos" / "c0.mp4"),
        "resolution": "tiny",
        "max_frames": 9,
        "num_video_frames_per_chunk": 9,
        "show_control_condition": True,
        "edge": {"preset_edge_threshold": "medium"},
    }
    spec.write_text(json.dumps(entry) + "\n")
    config = {
        "dataset_dir": str(data),
        "videoufo": {"storage_dir": str(root / "unused")},
        "train": {
            "preset": "tiny",
            "num_frames": 9,
            "max_iter": 4,
            "save_iter": 4,
            "lr": 1e-3,
            "warm_up_steps": 2,
            "grad_accum_iter": 1,
            "load_path": "results/demo_base/tiny_base.pt",
            "output_root": str(root / "out"),
            "overrides": ["trainer.sample_every=2", "trainer.sample_steps=2"],
        },
        "controls": {"preview_clips": 2},
        "inference": {"spec": str(spec), "num_steps": 2, "guidance": 0},
        "demo": {"base_iterations": 4},
    }
    work = root / "work"
    start = time.perf_counter()
    result = run_snakemake(work, config, ["demo"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chain = time.perf_counter() - start
    result = run_snakemake(work, config, ["--report", "report.html", "demo"])
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"chain {chain:.0f} s, report {time.perf_counter() - start - chain:.0f} s")
    return work


def test_report_opens_in_chromium_with_every_result_embedded(small_run, tmp_path):
    browser = chromium()
    report = small_run / "report.html"
    dom = dump_dom(browser, report, tmp_path / "profile")

    # the React app rendered: the loading screen is gone and the description is on the page
    app = re.search(r'<div id="app">(.*)', dom, re.S).group(1)
    assert "cosmos-posttrain" in app and "Post-training" in app, app[:2000]
    assert re.search(r'<div id="loading-screen"[^>]*style="[^"]*display: none', dom), (
        "the report's app never replaced its loading screen"
    )

    results = report_results(dom)
    by_name = {entry["name"]: entry for entry in results.values()}
    assert set(by_name) == set(EXPECTED)
    images, videos = [], []
    for name, entry in by_name.items():
        mime, data = decode_data_uri(entry["data_uri"])
        assert (mime, entry["mime_type"]) == (EXPECTED[name][1], EXPECTED[name][1]), name
        assert entry["caption"].strip(), f"{name} has no caption"
        if mime == "image/png":
            assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
            images.append(entry["data_uri"])
            continue
        sources = Sources()
        sources.feed(data.decode("utf-8"))
        for tag, src in sources.found:
            assert src.startswith("data:"), f"{name} refers to {src[:80]} instead of embedding it"
            if tag == "video":
                mp4 = tmp_path / f"v{len(videos)}.mp4"
                mp4.write_bytes(decode_data_uri(src)[1])
                assert probe_video(mp4).frames > 0
                videos.append((name, src))
    per_page = {n: sum(1 for page, _ in videos if page == n) for n in by_name}
    assert per_page["previews.html"] == 2  # one per preview clip
    assert per_page["samples.html"] == 4  # iterations 2 and 4, current and EMA weights
    assert per_page["edge.html"] == 2  # the entry and its control

    # every figure and video decodes in the browser itself
    checks = [f'<img src="{uri}">' for uri in images]
    checks += [f'<video muted preload="auto" src="{src}"></video>' for _, src in videos]
    checker = tmp_path / "check.html"
    checker.write_text(
        "<html><body>" + "".join(checks) + '<pre id="out">pending</pre><script>'
        "const items=[...document.querySelectorAll('img,video')];const state=items.map(()=>null);"
        "function report(){if(state.every(s=>s!==null))"
        "document.getElementById('out').textContent=JSON.stringify(state);}"
        "items.forEach((el,i)=>{const ok=()=>{state[i]=[el.tagName,"
        "el.naturalWidth||el.videoWidth||0];report();};const bad=()=>{state[i]=[el.tagName,-1];"
        "report();};if(el.tagName==='IMG'){if(el.complete)ok();else{el.onload=ok;el.onerror=bad;}}"
        "else{el.addEventListener('loadeddata',ok);el.addEventListener('error',bad);}});"
        "</script></body></html>"
    )
    for attempt, budget in enumerate((20000, 120000)):  # media decoding is asynchronous
        out = dump_dom(browser, checker, tmp_path / f"profile{attempt + 2}", budget)
        text = re.search(r'<pre id="out">(.*?)</pre>', out, re.S).group(1)
        if text != "pending":
            break
    assert text != "pending", "the browser never finished loading the figures and videos"
    state = json.loads(text)
    assert len(state) == len(images) + len(videos)
    assert all(width > 0 for _, width in state), state


def test_report_inputs_match_what_ran(small_run):
    report = small_run / "results/report"
    steps, loss = read_scalars(small_run.parent / "out" / RUN_SUBDIR / "tensorboard", "train/loss")
    assert list(steps) == [1, 2, 3, 4] and np.isfinite(loss).all()
    assert (report / "train/edge/loss.png").stat().st_size > 0
    text = (report / "dataset/manifest.html").read_text()
    assert "<td class=text>c0</td>" in text and "<td class=text>c1</td>" in text
    for log in ("dataset", "train_edge", "inference_edge", "demo_eval"):
        assert (small_run / f"results/logs/report/{log}.log").is_file(), log


def test_report_figures_shows_only_what_ran(small_run, tmp_path):
    """`report_figures` reports every stage that ran, and starts none that did not."""
    config = yaml.safe_load((small_run / "test_config.yaml").read_text())
    result = run_snakemake(small_run, config, ["--report", "again.html", "report_figures"])
    assert result.returncode == 0, result.stderr[-3000:]
    names = {e["name"] for e in report_results((small_run / "again.html").read_text()).values()}
    assert names == set(EXPECTED)
    fresh = run_snakemake(tmp_path / "fresh", config, ["-n", "report_figures"])
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    jobs = set(re.findall(r"^(\w+) +\d+$", fresh.stdout + fresh.stderr, re.M)) - {"total"}
    assert {"validate_dataset", "dataset_report", "preview_controls"} <= jobs
    assert not jobs & {"demo_base", "train", "training_report", "inference", "demo_eval"}, jobs


RUN_SUBDIR = (
    "cosmos_transfer2_posttrain/local_single_view/transfer2_singleview_posttrain_edge_example"
)


def test_pages_and_plots_from_files(tmp_path, make_clip):
    """The report modules alone: a manifest, an eval.json, a gallery with no videos."""
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(
        "id\tframes\tfps\twidth\theight\tduration_s\tcaption_chars\tcontrols\n"
        "a<b\t93\t24.0\t1280\t720\t3.88\t120\tdepth\n"
        "b\t120\t30.0\t640\t360\t4.0\t80\t\n"
    )
    page = manifest_page(manifest, tmp_path / "m.html").read_text()
    assert "a&lt;b" in page and "2 clips, 213 frames" in page
    pngs = dataset_histograms(manifest, *(tmp_path / f"{n}.png" for n in ("f", "d", "r")))
    assert all(cv2.imread(str(p)) is not None for p in pngs)
    result = {
        "loss_first_10pct": 0.2,
        "loss_last_10pct": 0.1,
        "edge_f1_base_alone": 0.1,
        "edge_f1_with_control": 0.3,
        "swap_f1_given_control": None,
        "swap_f1_own_edges": None,
        "per_clip": {"x": {"base": 0.1, "control": 0.3}},
        "loss_falls": True,
        "f1_ratio": 3.0,
        "swap_follows_control": False,
        "preset": "very_high",
    }
    (tmp_path / "eval.json").write_text(json.dumps(result))
    text = eval_page(tmp_path / "eval.json", tmp_path / "eval.html").read_text()
    assert "3.00x" in text and "n/a" in text and "Loss falls" in text
    assert cv2.imread(str(eval_chart(tmp_path / "eval.json", tmp_path / "e.png"))) is not None
    empty = gallery_page([], tmp_path / "g.html", "Samples", empty_note="No samples.")
    assert "No samples." in empty.read_text()
    clip = tmp_path / "c.mp4"
    clip.write_bytes(make_clip(9))
    full = gallery_page([Video(clip, "c", "a caption")], tmp_path / "v.html", "Videos")
    assert full.read_text().count('src="data:video/mp4;base64,') == 1
