"""Progress: a tqdm bar in a terminal, plain log lines in log files (Snakemake jobs, clusters)."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from conftest import write_dataset
from fakehub import FakeHub

from cosmos_posttrain.cli import run_snakemake_job
from cosmos_posttrain.hub import download_file
from cosmos_posttrain.progress import LogProgress, progress
from cosmos_posttrain.validate import validate_dataset


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def pristine_root_logger():
    """What a fresh process has: earlier in-process CLI calls configured the root logger."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def every_update(monkeypatch):
    """Log a line at every update, so a short loop shows its lines."""
    monkeypatch.setenv("COSMOS_PROGRESS_INTERVAL", "0")


def test_plain_lines_when_stderr_is_a_file(monkeypatch, caplog, every_update):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    caplog.set_level("INFO", logger="cosmos_posttrain.progress")
    bar = progress(range(4), desc="checking videos", unit="clip")
    assert isinstance(bar, LogProgress)
    assert list(bar) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("checking videos: 0/4 clip (0%)")
    assert lines[-1].startswith("checking videos: 4/4 clip (100%), ")
    assert "clip/s" in lines[-1] and "elapsed" in lines[-1] and "left" in lines[-1]
    assert len(lines) == 5  # start, one per step, no repeat on close
    assert stderr.getvalue() == ""  # no carriage-return bar in the log file


def test_lines_are_spaced_by_the_interval(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("COSMOS_PROGRESS_INTERVAL", "3600")
    caplog.set_level("INFO", logger="cosmos_posttrain.progress")
    for _ in progress(range(1000), desc="frames", unit="frame"):
        pass
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "frames: 0/1000 frame (0%)",
        "frames: 1000/1000 frame (100%)",
    ]


def test_a_bar_in_a_terminal(monkeypatch, caplog):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    caplog.set_level("INFO", logger="cosmos_posttrain.progress")
    bar = progress(total=3, desc="depth", unit="frame", file=terminal)
    assert not isinstance(bar, LogProgress)
    bar.update(3)
    bar.close()
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
    assert caplog.records == []


def test_download_logs_bytes_and_rate(tmp_path, monkeypatch, caplog, every_update):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level("INFO", logger="cosmos_posttrain.progress")
    with FakeHub() as hub:
        hub.add_file("org/data", "big.bin", b"x" * 300_000)
        download_file("org/data", "big.bin", tmp_path / "big.bin", endpoint=hub.url)
    lines = [r.getMessage() for r in caplog.records if r.name == "cosmos_posttrain.progress"]
    assert "big.bin: 0B/300kB (0%)" in lines[0]  # the client names the file by its URL
    assert any("big.bin: 300kB/300kB (100%), " in line for line in lines), lines
    assert any("B/s" in line for line in lines), lines


def test_snakemake_job_log_gets_plain_lines(tmp_path, monkeypatch, make_clip, every_update):
    """A workflow script's body, as run_snakemake_job runs it: progress lands in the rule's log."""
    data = write_dataset(tmp_path / "ds", {f"c{i}": (make_clip(12), f"cap {i}") for i in range(3)})
    log_path = tmp_path / "validate.log"
    root, handlers = logging.getLogger(), logging.getLogger().handlers[:]
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # restored after the job replaced it
    try:
        run_snakemake_job(str(log_path), lambda: validate_dataset(data, 9))
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
    text = log_path.read_text()
    assert "checking videos: 3/3 clip (100%)" in text
    assert "\r" not in text
