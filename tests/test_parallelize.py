"""The speed settings change nothing but speed: recompute policies, the fused q/k/v product,
the split cross-attention and the frame-wise adaLN give the forward, the gradients and the
state-dict names of the plain model (CPU, tiny models)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from diffusers import CosmosControlNetModel, CosmosTransformer3DModel

from cosmos_posttrain.context_parallel import blocks_of
from cosmos_posttrain.ema import PowerEMA
from cosmos_posttrain.errors import CosmosPosttrainError
from cosmos_posttrain.frame_adaln import set_frame_adaln
from cosmos_posttrain.models import TINY_CONTROLNET, TINY_TRANSFORMER, is_trained
from cosmos_posttrain.objective import predict_velocity
from cosmos_posttrain.parallelize import parallelize


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    base = CosmosTransformer3DModel(**TINY_TRANSFORMER).requires_grad_(False)
    ctrl = CosmosControlNetModel(**TINY_CONTROLNET)
    with torch.no_grad():  # non-zero projections so the branch matters
        for param in ctrl.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return base, ctrl


def run(models, policy: str | None, batch: int = 1, **speed):
    """One training forward and backward; each frame and each row has its own timestep, so
    that anything mixing up frames or rows shows."""
    base, ctrl = (copy.deepcopy(m) for m in models)
    for name, param in ctrl.named_parameters():
        param.requires_grad_(is_trained(name))
    if policy is not None:
        for model in (base, ctrl):
            parallelize(model, recompute=policy, **speed)
    g = torch.Generator().manual_seed(1)
    channels, (t, h, w) = TINY_TRANSFORMER["out_channels"], (3, 16, 28)
    x = torch.randn(batch, channels, t, h, w, generator=g)
    control = torch.randn(batch, channels, t, h, w, generator=g)
    text = torch.randn(batch, 32, TINY_TRANSFORMER["crossattn_proj_in_channels"], generator=g)
    v = predict_velocity(
        base,
        ctrl,
        x,
        torch.rand(batch, 1, t, 1, 1, generator=g),
        text,
        torch.zeros(batch, 1, t, h, w),
        torch.zeros(1, 1, 2 * h, 2 * w),
        control,
    )
    v.square().mean().backward()
    grads = {n: p.grad for n, p in ctrl.named_parameters() if p.grad is not None}
    return v.detach(), grads, ctrl


def assert_same_training(result, reference, tolerance: float | None) -> None:
    """Same velocity and gradients (bit for bit when `tolerance` is None), same names."""
    (v, grads, ctrl), (ref_v, ref_grads, ref_ctrl) = result, reference

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:  # relative to the tensor's scale
        if tolerance is None:
            return torch.equal(a, b)
        return torch.allclose(a, b, rtol=tolerance, atol=tolerance * b.abs().max().item())

    assert close(v, ref_v)
    assert len(grads) == len(ref_grads) > 0
    clean = {n.replace("_checkpoint_wrapped_module.", ""): g for n, g in grads.items()}
    for name, grad in ref_grads.items():
        assert close(clean[name], grad), name
    # checkpoints and the EMA keep the plain names whatever wraps the blocks
    assert list(ctrl.state_dict()) == list(ref_ctrl.state_dict())
    assert list(PowerEMA(ctrl).state_dict()) == list(PowerEMA(ref_ctrl).state_dict())


@pytest.mark.parametrize("policy", ["full", "save_attention"])
def test_recompute_policies_equal_no_recompute(models, policy):
    assert_same_training(run(models, policy), run(models, "none"), tolerance=None)


@pytest.mark.parametrize("splits", [1, 4, 5])  # 5 does not divide 336 tokens: not split
def test_our_processors_equal_diffusers_up_to_rounding(models, splits):
    """The stacked q/k/v product and the split cross-attention change only the rounding."""
    result = run(models, "save_attention", cross_attention_splits=splits)
    assert_same_training(result, run(models, None), tolerance=1e-6)


@pytest.mark.parametrize("frame_adaln", [False, True])
def test_frame_adaln_equals_diffusers_and_runs_on_frame_rows(models, frame_adaln):
    """adaLN once per latent frame gives diffusers' velocity and gradients up to rounding; its
    products then see one row per frame (3), not one per token (3 x 8 x 14 = 336)."""
    rows = set()
    hooked = copy.deepcopy(models)
    norms = [block.norm1 for model in hooked for block in blocks_of(model)]
    for norm in [*norms, hooked[0].norm_out]:  # the blocks' and the output layer's
        norm.linear_1.register_forward_hook(lambda module, args, out: rows.add(args[0].shape[1]))
    result = run(hooked, "save_attention", batch=2, frame_adaln=frame_adaln)
    assert rows == ({3} if frame_adaln else {336})
    assert_same_training(result, run(models, None, batch=2), tolerance=1e-6)


def test_frame_adaln_falls_back_where_rows_are_not_frames(models):
    """One timestep per clip (2-D embedding) or tokens that do not split into the recorded
    frames: diffusers' forward, unchanged."""
    from cosmos_posttrain.frame_adaln import FRAME_WISE

    dim = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
    x = torch.randn(2, 10, dim)
    for plain in (blocks_of(models[0])[0].norm1, models[0].norm_out):
        norm = copy.deepcopy(plain)
        norm.__class__ = FRAME_WISE[type(plain)]  # what set_frame_adaln does
        norm.frame_size = torch.empty(4, 0)  # 4 tokens per frame do not divide 10 tokens
        for emb in (torch.randn(2, dim), torch.randn(2, 10, dim)):
            with torch.no_grad():
                ours, theirs = norm(x, emb), plain(x, emb)
            assert (
                all(map(torch.equal, ours, theirs))
                if isinstance(ours, tuple)
                else (torch.equal(ours, theirs))
            )
    model = copy.deepcopy(models[0])
    for _ in range(2):  # applying it twice registers one hook
        set_frame_adaln(model)
    assert len(model._forward_pre_hooks) == 1


def test_split_cross_attention_keeps_each_batch_row_with_its_own_text(models):
    """Batch 2 with two different texts (inference's guided and unguided calls): each video
    row attends to its own text, whatever the split."""
    from diffusers.models.transformers.transformer_cosmos import CosmosAttnProcessor2_0

    from cosmos_posttrain.context_parallel import CosmosCrossAttention

    attn = copy.deepcopy(models[0].transformer_blocks[0].attn2)
    g = torch.Generator().manual_seed(2)
    video = torch.randn(2, 336, attn.query_dim, generator=g)
    texts = torch.randn(2, 32, attn.cross_attention_dim, generator=g)
    with torch.no_grad():
        reference = CosmosAttnProcessor2_0()(attn, video, texts)
        for splits in (1, 4, 5):
            out = CosmosCrossAttention(splits)(attn, video, texts)
            assert torch.allclose(out, reference, rtol=1e-5, atol=1e-6), splits
        swapped = CosmosCrossAttention(4)(attn, video, texts.flip(0))
    assert not torch.allclose(swapped, reference, rtol=1e-3, atol=1e-4)


def test_guided_velocity_shares_the_first_self_attention_between_its_halves(models):
    """Guidance for two videos: the guided and unguided halves (4 rows: the same two videos,
    two texts each). The first block of each model attends over one half and shares it; the
    result is the guidance formula over two separate calls, and nothing is shared after it."""
    from cosmos_posttrain import context_parallel
    from cosmos_posttrain.sampling import guided_velocity

    base, ctrl = (copy.deepcopy(m) for m in models)
    for model in (base, ctrl):
        parallelize(model, recompute="none")
    batches = []
    kernel = context_parallel.sdpa_attention

    def recording(q, k, v):
        batches.append(q.shape[0])
        return kernel(q, k, v)

    for model in (base, ctrl):
        for block in blocks_of(model):
            block.attn1.processor.kernel = recording
    g = torch.Generator().manual_seed(3)
    channels, (t, h, w) = TINY_TRANSFORMER["out_channels"], (3, 16, 28)
    x, control = (torch.randn(2, channels, t, h, w, generator=g) for _ in range(2))
    text, uncond = (
        torch.randn(2, 32, TINY_TRANSFORMER["crossattn_proj_in_channels"], generator=g)
        for _ in range(2)
    )
    timestep = torch.rand(2, 1, t, 1, 1, generator=g)
    common = (torch.zeros(2, 1, t, h, w), torch.zeros(1, 1, 2 * h, 2 * w), control)
    with torch.no_grad():
        guided = guided_velocity(base, ctrl, x, timestep, text, uncond, *common, 1.0, 3.0)
        shared_calls = list(batches)
        computed = guided_velocity(
            base, ctrl, x, timestep, text, uncond, *common, 1.0, 3.0, share_first_rows=False
        )
        unshared_calls = batches[len(shared_calls) :]
        cond = predict_velocity(base, ctrl, x, timestep, text, *common)
        free = predict_velocity(base, ctrl, x, timestep, uncond, *common)
    expected = cond + 3.0 * (cond - free)
    per_model = [len(blocks_of(ctrl)), len(blocks_of(base))]  # control branch first
    assert shared_calls == [n for blocks in per_model for n in [2] + [4] * (blocks - 1)]
    assert unshared_calls == [4] * sum(per_model)
    for result in (guided, computed):
        assert torch.allclose(result, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
    assert not torch.allclose(guided[0], guided[1], rtol=1e-3)  # two videos, kept apart


def test_image_context_blocks_keep_diffusers_cross_attention():
    """Blocks that also attend to an image context take a (text, image) pair: not ours."""
    from cosmos_posttrain.context_parallel import CosmosCrossAttention, set_cross_attention

    plain = CosmosTransformer3DModel(**TINY_TRANSFORMER)
    with_image = CosmosTransformer3DModel(**TINY_TRANSFORMER, img_context_dim_in=16)
    for model in (plain, with_image):
        set_cross_attention(model)

    def ours(model) -> list[bool]:
        blocks = model.transformer_blocks
        return [isinstance(block.attn2.processor, CosmosCrossAttention) for block in blocks]

    assert all(ours(plain)) and not any(ours(with_image))


def test_cross_attention_splits_the_queries_into_batch_rows(models, monkeypatch):
    """The split happens (the kernel sees `splits` rows of the batch, each with the whole text)
    and only where the tokens divide evenly."""
    from cosmos_posttrain import context_parallel

    shapes = []
    kernel = context_parallel.sdpa_attention

    def recording(q, k, v):
        shapes.append((tuple(q.shape), tuple(k.shape)))
        return kernel(q, k, v)

    monkeypatch.setattr(context_parallel, "sdpa_attention", recording)
    for splits in (4, 5):
        run(models, "none", cross_attention_splits=splits)
    text = 32  # tokens of the tiny text, against 3 x 8 x 14 = 336 video tokens
    heads, dim = TINY_TRANSFORMER["num_attention_heads"], TINY_TRANSFORMER["attention_head_dim"]
    assert ((4, 84, heads, dim), (4, text, heads, dim)) in shapes
    assert ((1, 336, heads, dim), (1, text, heads, dim)) in shapes
    assert not [q for q, _ in shapes if q[0] not in (1, 4)]


def test_unknown_policy_and_kernel_are_refused(models):
    base = copy.deepcopy(models[0])
    with pytest.raises(ValueError, match="recompute policy 'some'"):
        parallelize(base, recompute="some")
    with pytest.raises(ValueError, match="query_splits=0"):
        parallelize(copy.deepcopy(base), cross_attention_splits=0)
    with pytest.raises(CosmosPosttrainError, match="attention kernel 'flash4'"):
        parallelize(base, attention_kernel="flash4")


def test_attention_kernel_auto_takes_fa4_only_where_it_runs(monkeypatch):
    import sys
    import types

    from cosmos_posttrain import attention_kernels as ak

    assert ak.attention_kernel("auto", "cpu") is ak.sdpa_attention
    assert "Hopper or Blackwell" in ak.fa4_problem("cpu") or "flash-attn-4" in ak.fa4_problem("cpu")
    assert ak.attention_kernel("sage", "cpu") is ak.sage_attention
    with pytest.raises(ak.AttentionKernelError, match="'flash'.*auto.*sdpa.*fa4"):
        ak.attention_kernel("flash", "cpu")
    # a GPU of each generation, with the package present (faked) and activation recorded
    monkeypatch.setattr(ak.attention, "list_flash_attention_impls", lambda: ["FA3", "FA4"])
    cute = types.ModuleType("flash_attn.cute")
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    activated = []
    monkeypatch.setattr(ak, "activate_fa4", lambda: activated.append(True))
    for capability, expected in [((9, 0), ak.fa4_attention), ((8, 0), ak.sdpa_attention)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert ak.attention_kernel("auto", "cuda") is expected
    assert activated == [True]
    with pytest.raises(ak.AttentionKernelError, match="'fa4' runs on NVIDIA Hopper or Blackwell"):
        ak.attention_kernel("fa4", "cuda")  # still the (8, 0) card


def test_fa4_asked_for_without_its_package_says_what_is_missing(models, monkeypatch):
    import sys

    from cosmos_posttrain.attention_kernels import AttentionKernelError

    monkeypatch.setitem(sys.modules, "flash_attn", None)  # as if not installed
    with pytest.raises(AttentionKernelError, match="attention kernel 'fa4' needs"):
        parallelize(copy.deepcopy(models[0]), attention_kernel="fa4")


def test_fa4_runs_in_the_autocast_dtype_of_an_fp32_branch():
    """The trained branch keeps fp32 weights: its q and k come out of RMSNorm in fp32 under
    autocast, and FA4 must still take them (in bf16), not fall back to another kernel."""
    from cosmos_posttrain.attention_kernels import fa4_dtype

    q = torch.zeros(1, 4, 2, 8)
    assert fa4_dtype(q) is None
    assert fa4_dtype(q.bfloat16()) is torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fa4_dtype(q) is torch.bfloat16


def test_fa4_kernels_module_hands_pytorch_exactly_out_and_lse(monkeypatch):
    """torch 2.11's FA4 glue unpacks two values; flash-attn-4 releases return more."""
    import importlib.util
    import sys
    import types

    import cosmos_posttrain

    interface = types.ModuleType("flash_attn.cute.interface")
    interface._flash_attn_fwd = lambda q, k, v, **kw: (q + 1, k.sum(-1), "extra", None)
    interface._flash_attn_bwd = object()
    cute = types.ModuleType("flash_attn.cute")
    cute.interface = interface
    package = types.ModuleType("flash_attn")
    package.cute = cute
    for name, module in [
        ("flash_attn", package),
        ("flash_attn.cute", cute),
        ("flash_attn.cute.interface", interface),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    # a private copy of the module, never registered, so no fake outlives the test
    path = Path(cosmos_posttrain.__file__).with_name("fa4_kernels.py")
    spec = importlib.util.spec_from_file_location("fa4_kernels_under_test", path)
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    q = torch.zeros(1, 4, 2, 8)
    result = kernels._flash_attn_fwd(q, q, q, softmax_scale=0.1, return_lse=True)
    assert len(result) == 2
    assert torch.equal(result[0], q + 1) and result[1].shape == (1, 4, 2)
    assert kernels._flash_attn_bwd is interface._flash_attn_bwd
