"""Conversion of a tiny training run, the diffusers export, and inference from JSON/JSONL specs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import run_python, write_dataset
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from cosmos_posttrain.convert_checkpoint import convert, latest_model_dir
from cosmos_posttrain.convert_checkpoint import main as convert_main
from cosmos_posttrain.errors import CosmosPosttrainError
from cosmos_posttrain.experiments import build_config
from cosmos_posttrain.inference import main as inference_main
from cosmos_posttrain.inference_spec import SpecError, load_specs
from cosmos_posttrain.video_io import probe_video, read_frames, write_video

EXPERIMENT = "transfer2_singleview_posttrain_edge_example"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_clip) -> dict:
    """Two iterations of the tiny preset, with a base saved as the demo saves it."""
    from cosmos_posttrain.models import build_models
    from cosmos_posttrain.trainer import train

    root = tmp_path_factory.mktemp("convert")
    clips = {f"c{i}": (make_clip(20, offset=10 * i), f"a street {i}") for i in range(2)}
    data = write_dataset(root / "ds", clips)
    base_cfg = build_config([f"experiment={EXPERIMENT}", "preset=tiny"])
    base = build_models(base_cfg, torch.device("cpu")).transformer
    base_path = root / "base.pt"
    torch.save({f"transformer.{k}": v for k, v in base.state_dict().items()}, base_path)
    config = build_config(
        [
            f"experiment={EXPERIMENT}",
            "preset=tiny",
            f"dataloader_train.dataset.dataset_dir={data}",
            f"output_root={root / 'out'}",
            "trainer.max_iter=2",
            "checkpoint.save_iter=2",
            f"checkpoint.load_path={base_path}",
        ]
    )
    run = train(config)
    return {"run": run, "data": data, "base": base_path, "root": root}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_convert_writes_reference_files(trained, tmp_path):
    model_dir = latest_model_dir(trained["run"] / "checkpoints")
    iter_dir = model_dir.parent
    assert convert_main([str(model_dir), str(iter_dir)]) == 0
    full = torch.load(iter_dir / "model.pt", weights_only=True)
    fp32 = torch.load(iter_dir / "model_ema_fp32.pt", weights_only=True)
    bf16 = torch.load(iter_dir / "model_ema_bf16.pt", weights_only=True)
    ema_keys = {k for k in full if k.startswith("net_ema.")}
    assert ema_keys and {k.replace("net_ema.", "net.", 1) for k in ema_keys} == set(fp32)
    assert set(fp32) == set(bf16)
    for key in fp32:
        assert fp32[key].dtype == torch.float32 and bf16[key].dtype == torch.bfloat16
        assert torch.equal(fp32[key], full[key.replace("net.", "net_ema.", 1)])
        assert torch.equal(bf16[key], fp32[key].to(torch.bfloat16))
    reference = tmp_path / "ref.pt"
    dcp_to_torch_save(model_dir, reference)
    assert torch.load(reference, weights_only=True).keys() == full.keys()
    # converting twice gives identical files
    before = {p.name: sha(p) for p in iter_dir.glob("*.pt")}
    convert(model_dir, iter_dir)
    assert {p.name: sha(p) for p in iter_dir.glob("*.pt")} == before
    diffusers_before = {p.name: sha(p) for p in (iter_dir / "controlnet_diffusers").iterdir()}
    convert(model_dir, iter_dir)
    diffusers_after = {p.name: sha(p) for p in (iter_dir / "controlnet_diffusers").iterdir()}
    assert diffusers_after == diffusers_before


def test_diffusers_folder_equals_in_memory_model(trained):
    from diffusers import CosmosControlNetModel

    from cosmos_posttrain.checkpoint import load_controlnet_weights
    from cosmos_posttrain.models import build_models

    model_dir = latest_model_dir(trained["run"] / "checkpoints")
    convert(model_dir, model_dir.parent)
    exported = CosmosControlNetModel.from_pretrained(model_dir.parent / "controlnet_diffusers")
    config = build_config(
        [f"experiment={EXPERIMENT}", "preset=tiny", f"checkpoint.load_path={trained['base']}"]
    )
    memory = build_models(config, torch.device("cpu")).controlnet
    load_controlnet_weights(model_dir.parent, memory, use_ema=True)
    g = torch.Generator().manual_seed(0)
    args = dict(
        controls_latents=torch.randn(1, 12, 3, 16, 24, generator=g),
        latents=torch.randn(1, 12, 3, 16, 24, generator=g),
        timestep=torch.rand(1, 1, 3, 1, 1, generator=g),
        encoder_hidden_states=torch.randn(1, 32, 2304, generator=g),
        condition_mask=torch.zeros(1, 1, 3, 16, 24),
        padding_mask=torch.zeros(1, 1, 32, 48),
        return_dict=False,
    )
    with torch.no_grad():
        a, b = exported(**args)[0], memory(**args)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(x.abs().sum() > 0 for x in a)  # the trained projections are not all zero


def test_checkpoint_without_ema_is_an_error(tmp_path):
    import torch.distributed.checkpoint as dcp

    dcp.save({"net.controlnet.w": torch.ones(2)}, checkpoint_id=tmp_path / "model")
    with pytest.raises(CosmosPosttrainError, match="no EMA weights"):
        convert(tmp_path / "model", tmp_path)
    with pytest.raises(CosmosPosttrainError, match="not a DCP checkpoint folder"):
        convert(tmp_path, tmp_path)


def write_spec(folder: Path, entries: list[dict], name: str = "spec.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_inference_two_entries_end_to_end(trained, tmp_path):
    model_dir = latest_model_dir(trained["run"] / "checkpoints")
    written = convert(model_dir, model_dir.parent)
    clip = trained["data"] / "videos" / "c0.mp4"
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    control = spec_dir / "edge.mp4"
    frames = read_frames(clip)
    from cosmos_posttrain.controls import edge_preset

    write_video(control, edge_preset(frames, "low"), 24)
    (spec_dir / "prompt.txt").write_text("a street at dusk\n")
    spec = write_spec(
        spec_dir,
        [
            {
                "name": "on_the_fly",
                "prompt_path": "prompt.txt",
                "video_path": str(clip),
                "resolution": "tiny",
                "num_video_frames_per_chunk": 9,
                "num_conditional_frames": 1,
                "max_frames": 17,
                "num_steps": 3,
                "guidance": 2,
                "show_control_condition": True,
                "edge": {"preset_edge_threshold": "high"},
            },
            {
                "name": "given",
                "prompt": "a street",
                "video_path": str(clip),
                "resolution": "tiny",
                "max_frames": 9,
                "num_video_frames_per_chunk": 9,
                "num_steps": 3,
                "show_input": True,
                "edge": {"control_path": "edge.mp4", "control_weight": 0.5},
            },
        ],
    )
    out = tmp_path / "out"
    code = inference_main(
        [
            "-i",
            str(spec),
            "-o",
            str(out),
            "--checkpoint-path",
            str(written["ema_bf16"]),
            "--experiment",
            EXPERIMENT,
            "--num-steps",
            "2",
            "--",
            "preset=tiny",
            f"checkpoint.load_path={trained['base']}",
        ]
    )
    assert code == 0
    first = probe_video(out / "on_the_fly.mp4")
    assert (first.frames, first.width, first.height) == (17, 64, 48)  # back to input size
    assert probe_video(out / "on_the_fly_control_edge.mp4").frames == 17
    second = probe_video(out / "given.mp4")
    assert (second.frames, second.width) == (9, 128)  # input | output
    resolved = json.loads((out / "on_the_fly.json").read_text())
    assert resolved["prompt"] == "a street at dusk" and resolved["num_steps"] == 2
    assert resolved["controls"][0]["preset"] == "high"


def test_spec_errors_all_at_once(tmp_path, make_clip):
    video = tmp_path / "v.mp4"
    video.write_bytes(make_clip(20))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    entries = [
        {"name": "a", "prompt": "p", "video_path": "v.mp4", "edge": {}, "colour": "red"},
        {"name": "a", "prompt": "p", "video_path": "v.mp4", "edge": {}},
        {"name": "b", "prompt": "p", "video_path": "missing.mp4", "edge": {}},
        {"name": "c", "prompt": "p", "video_path": "bad.mp4", "edge": {}},
        {"name": "d", "prompt": "p", "video_path": "v.mp4", "edge": {"control_weight": 1.5}},
        {"name": "e", "prompt": "p", "video_path": "v.mp4"},
        {
            "name": "f",
            "prompt": "p",
            "video_path": "v.mp4",
            "edge": {"preset_edge_threshold": "extreme"},
        },
        {"name": "g", "video_path": "v.mp4", "vis": {"preset_blur_strength": "medium"}},
    ]
    spec = write_spec(tmp_path, entries)
    with pytest.raises(SpecError) as info:
        load_specs(spec)
    message = str(info.value)
    expected = [
        (1, "unknown field 'colour'"),
        (2, "duplicate name 'a' (first on line 1)"),
        (3, "missing.mp4 not found"),
        (4, "cannot be opened as a video"),
        (5, "'control_weight'=1.5 is outside [0.0, 1.0]"),
        (6, "no control given"),
        (7, "unknown preset edge.preset_edge_threshold='extreme'"),
        (8, "'prompt' or 'prompt_path' is required"),
    ]
    for line, words in expected:
        assert f"{spec}:{line}: " in message and words in message, (line, words, message)
    assert f"{len(expected)} problem(s)" in message
    single = tmp_path / "one.json"
    single.write_text(
        json.dumps(
            {
                "name": "x",
                "prompt": "p",
                "video_path": "v.mp4",
                "vis": {"preset_blur_strength": "high"},
            }
        )
    )
    [entry] = load_specs(single)
    assert entry.controls[0].kind == "vis" and entry.controls[0].preset == "high"
    assert (entry.seed, entry.guidance, entry.num_steps, entry.num_conditional_frames) == (
        2025,
        3.0,
        35,
        1,
    )


def test_inference_refuses_wrong_control_before_loading(tmp_path, make_clip):
    video = tmp_path / "v.mp4"
    video.write_bytes(make_clip(20))
    spec = write_spec(tmp_path, [{"name": "x", "prompt": "p", "video_path": "v.mp4", "vis": {}}])
    assert (
        inference_main(
            [
                "-i",
                str(spec),
                "-o",
                str(tmp_path / "o"),
                "--checkpoint-path",
                "nope.pt",
                "--",
                "preset=tiny",
            ]
        )
        == 1
    )
    assert not (tmp_path / "o").exists()


def test_inference_context_parallel_2_equals_one_process(trained, tmp_path, monkeypatch, capsys):
    """torchrun with 2 processes splits each chunk's latent frames over both (Ulysses CP, the
    default); the video equals the one a single process makes."""
    import numpy as np

    model_dir = latest_model_dir(trained["run"] / "checkpoints")
    written = convert(model_dir, model_dir.parent)
    entry = {
        "name": "cp",
        "prompt": "a street",
        "video_path": str(trained["data"] / "videos" / "c1.mp4"),
        "resolution": "tiny",
        "max_frames": 13,
        "num_video_frames_per_chunk": 13,
        "num_steps": 3,
        "guidance": 2,
        "edge": {"preset_edge_threshold": "medium"},
    }
    spec = write_spec(tmp_path, [entry])
    args = [
        "-i",
        str(spec),
        "--checkpoint-path",
        str(written["ema_bf16"]),
        "--experiment",
        EXPERIMENT,
        "--",
        "preset=tiny",
        f"checkpoint.load_path={trained['base']}",
    ]
    assert inference_main(["-o", str(tmp_path / "one"), *args]) == 0
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run_python(
        [*cmd, "-m", "cosmos_posttrain.inference", "-o", str(tmp_path / "cp2"), *args],
        timeout=600,
    )
    one = read_frames(tmp_path / "one" / "cp.mp4").astype(np.int16)
    cp2 = read_frames(tmp_path / "cp2" / "cp.mp4").astype(np.int16)
    assert one.shape == cp2.shape == (13, 48, 64, 3)
    assert np.abs(one - cp2).mean() < 0.5, np.abs(one - cp2).mean()

    # 9-frame chunks have 3 latent frames: they cannot be split over 2 ranks
    monkeypatch.setenv("WORLD_SIZE", "2")
    spec9 = write_spec(tmp_path, [{**entry, "num_video_frames_per_chunk": 9}], "spec9.jsonl")
    args[1] = str(spec9)
    assert inference_main(["-o", str(tmp_path / "nine"), *args]) == 1
    err = capsys.readouterr().err
    assert "spec9.jsonl:1" in err and "do not split over context_parallel_size=2" in err
    assert not (tmp_path / "nine").exists()


def tiny_depth_model(folder: Path) -> Path:
    """conftest's tiny Depth Anything, saved as a hub folder would hold it."""
    from conftest import tiny_depth_anything

    model, processor = tiny_depth_anything()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_depth_is_computed_on_the_fly_and_seg_needs_a_prompt(trained, tmp_path):
    """A depth entry without control_path runs Depth Anything on the input first."""
    model_dir = latest_model_dir(trained["run"] / "checkpoints")
    written = convert(model_dir, model_dir.parent)
    entry = {
        "name": "depth",
        "prompt": "a street",
        "video_path": str(trained["data"] / "videos" / "c0.mp4"),
        "resolution": "tiny",
        "max_frames": 9,
        "num_video_frames_per_chunk": 9,
        "num_steps": 2,
        "show_control_condition": True,
        "depth": {},
    }
    spec = write_spec(tmp_path, [entry])
    code = inference_main(
        [
            "-i",
            str(spec),
            "-o",
            str(tmp_path / "out"),
            "--checkpoint-path",
            str(written["ema_bf16"]),
            "--experiment",
            "transfer2_singleview_posttrain_depth_example",
            "--depth-model",
            str(tiny_depth_model(tmp_path / "depth_model")),
            "--",
            "preset=tiny",
            f"checkpoint.load_path={trained['base']}",
        ]
    )
    assert code == 0
    assert probe_video(tmp_path / "out" / "depth.mp4").frames == 9
    control = read_frames(tmp_path / "out" / "depth_control_depth.mp4")
    assert control.shape[0] == 9 and control.std() > 1  # a grey depth map, not a blank
    assert abs(control[..., 0].astype(int) - control[..., 2]).max() <= 8  # grey

    seg = write_spec(tmp_path, [{**entry, "depth": None, "seg": {}}], "seg.jsonl")
    with pytest.raises(SpecError, match="seg.jsonl:1: seg without control_path .* control_prompt"):
        load_specs(seg)
