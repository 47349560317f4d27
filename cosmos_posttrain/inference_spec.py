"""Inference specs: the reference's JSON / JSONL format, checked whole before any model loads.

A `.json` file holds one object, a `.jsonl` file one object per line. Paths are relative to the
spec file. Every problem of every entry is reported at once, with its line number.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .controls import BLUR_PRESETS, EDGE_PRESETS
from .errors import CosmosPosttrainError, VideoError
from .video_io import probe_video

CONTROL_KEYS = ("edge", "depth", "vis", "seg")
DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a game playing, with bad crappy graphics and cartoonish frames. It "
    "represents a recording of old outdated games. The lighting looks very fake. The textures "
    "are very raw and basic. The geometries are very primitive. The images are very pixelated "
    "and of poor CG quality. There are many subtitles in the footage. Overall, the video is "
    "unrealistic at all."
)
TOP_FIELDS = {
    "name",
    "prompt",
    "prompt_path",
    "video_path",
    "negative_prompt",
    "seed",
    "guidance",
    "num_steps",
    "resolution",
    "max_frames",
    "num_video_frames_per_chunk",
    "num_conditional_frames",
    "show_control_condition",
    "show_input",
    "keep_input_resolution",
    *CONTROL_KEYS,
}
CONTROL_FIELDS = {
    "control_path",
    "control_weight",
    "preset_edge_threshold",
    "preset_blur_strength",
    "control_prompt",
}
RESOLUTIONS = ("720", "tiny")


class SpecError(CosmosPosttrainError):
    """An inference spec has problems; the message lists each with its line."""


@dataclass
class ControlSpec:
    kind: str
    control_path: Path | None = None
    control_weight: float = 1.0
    preset: str = "medium"
    control_prompt: str = ""  # seg on the fly: what Grounding DINO looks for


@dataclass
class InferenceSpec:
    name: str
    prompt: str
    video_path: Path
    controls: list[ControlSpec]
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    seed: int = 2025
    guidance: float = 3.0
    num_steps: int = 35
    resolution: str = "720"
    max_frames: int | None = None
    num_video_frames_per_chunk: int = 93
    num_conditional_frames: int = 1
    show_control_condition: bool = False
    show_input: bool = False
    keep_input_resolution: bool = True
    line: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> dict[str, Any]:
        """The spec as run, for `<name>.json`."""
        data = asdict(self)
        data["video_path"] = str(self.video_path)
        data["controls"] = [
            {**asdict(c), "control_path": str(c.control_path) if c.control_path else None}
            for c in self.controls
        ]
        data.pop("extra")
        return data


def _records(path: Path) -> list[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                out.append((number, line))
        return out
    return [(1, text)]


def _number(
    entry: dict,
    key: str,
    kind: type,
    problems: list[str],
    where: str,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
        problems.append(f"{where}: '{key}' must be {'a number' if kind is float else 'an integer'}")
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        problems.append(f"{where}: '{key}'={value} is outside [{low}, {high}]")
        return None
    return value


def load_specs(path: str | Path, overrides: dict[str, Any] | None = None) -> list[InferenceSpec]:
    """Parse and check a spec file; raise SpecError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    base = path.parent
    problems: list[str] = []
    specs: list[InferenceSpec] = []
    names: dict[str, int] = {}
    for line, raw in _records(path):
        where = f"{path}:{line}"
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: invalid JSON ({exc.msg})")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: an entry must be a JSON object")
            continue
        entry = {**entry, **(overrides or {})}
        count = len(problems)
        for key in sorted(set(entry) - TOP_FIELDS):
            problems.append(f"{where}: unknown field '{key}'")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: 'name' is required")
        elif name in names:
            problems.append(f"{where}: duplicate name '{name}' (first on line {names[name]})")
        else:
            names[name] = line
        prompt = entry.get("prompt")
        if prompt is None and "prompt_path" in entry:
            prompt_file = base / str(entry["prompt_path"])
            if prompt_file.is_file():
                prompt = prompt_file.read_text(encoding="utf-8").strip()
            else:
                problems.append(f"{where}: prompt_path {prompt_file} not found")
        if prompt is None and "prompt_path" not in entry:
            problems.append(f"{where}: 'prompt' or 'prompt_path' is required")
        video = None
        if "video_path" not in entry:
            problems.append(f"{where}: 'video_path' is required")
        else:
            video = base / str(entry["video_path"])
            if not video.is_file():
                problems.append(f"{where}: video {video} not found")
            else:
                try:
                    probe_video(video)
                except VideoError as exc:
                    problems.append(f"{where}: video {exc}")
        controls = []
        for kind in CONTROL_KEYS:
            if kind not in entry:
                continue
            block = entry[kind]
            if not isinstance(block, dict):
                problems.append(f"{where}: '{kind}' must be an object")
                continue
            for key in sorted(set(block) - CONTROL_FIELDS):
                problems.append(f"{where}: unknown field '{kind}.{key}'")
            control = ControlSpec(kind)
            if "control_weight" in block:
                weight = _number(
                    block, "control_weight", float, problems, f"{where}: {kind}", 0.0, 1.0
                )
                control.control_weight = weight if weight is not None else 1.0
            if "control_path" in block:
                control.control_path = base / str(block["control_path"])
                if not control.control_path.is_file():
                    problems.append(
                        f"{where}: {kind} control video {control.control_path} not found"
                    )
            preset_key, presets = (
                ("preset_edge_threshold", EDGE_PRESETS)
                if kind == "edge"
                else ("preset_blur_strength", BLUR_PRESETS)
            )
            if preset_key in block:
                if kind not in ("edge", "vis") or block[preset_key] not in presets:
                    problems.append(
                        f"{where}: unknown preset {kind}.{preset_key}="
                        f"{block[preset_key]!r} (known: {', '.join(presets)})"
                    )
                else:
                    control.preset = block[preset_key]
            if "control_prompt" in block:
                control.control_prompt = str(block["control_prompt"]).strip()
            if kind == "seg" and control.control_path is None and not control.control_prompt:
                problems.append(
                    f"{where}: seg without control_path is computed on the fly and needs "
                    'control_prompt (the objects to segment, e.g. "car. person.")'
                )
            controls.append(control)
        if not controls:
            problems.append(f"{where}: no control given (one of {', '.join(CONTROL_KEYS)})")
        spec_args: dict[str, Any] = {}
        for key, kind, low, high in (
            ("seed", int, None, None),
            ("guidance", float, 0, 20),
            ("num_steps", int, 1, 1000),
            ("max_frames", int, 1, None),
            ("num_video_frames_per_chunk", int, 1, None),
            ("num_conditional_frames", int, 0, 2),
        ):
            if key in entry and entry[key] is not None:
                value = _number(entry, key, kind, problems, where, low, high)
                if value is not None:
                    spec_args[key] = value
        if "resolution" in entry:
            if str(entry["resolution"]) not in RESOLUTIONS:
                problems.append(
                    f"{where}: resolution {entry['resolution']!r} is not one of "
                    f"{', '.join(RESOLUTIONS)}"
                )
            else:
                spec_args["resolution"] = str(entry["resolution"])
        for key in (
            "negative_prompt",
            "show_control_condition",
            "show_input",
            "keep_input_resolution",
        ):
            if key in entry:
                spec_args[key] = entry[key]
        if len(problems) == count:
            specs.append(
                InferenceSpec(
                    name=name,
                    prompt=prompt,
                    video_path=video,
                    controls=controls,
                    line=line,
                    **spec_args,
                )
            )
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise SpecError(f"{path}: {len(problems)} problem(s) in the inference spec:\n{lines}")
    return specs
