"""The inputs `sage_hopper` prepares for SageAttention 2's Hopper kernel: formats and layout.

The kernel itself needs an H100 (its speed and error are in docs/BENCHMARKS.md); here the
quantised tensors are read back the way the kernel reads them and compared with the originals.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import exact_attention

from cosmos_posttrain import sage_hopper

B, L, H, D = 2, 256, 3, 128
# where the Hopper kernel's FP8 P.V product reads each token of a group of 16 (its source's
# transpose kernel): stored place p holds token KERNEL_V_ORDER[p]
KERNEL_V_ORDER = (0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15)


@pytest.fixture(scope="module")
def qkv():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, L, H, D, generator=gen) for _ in range(3))
    k = k + 4 * torch.randn(1, 1, H, D, generator=gen)  # a channel bias, as trained keys have
    q[:, :16] *= 8  # one loud group of Q rows: its scale must not leak into the next group
    return tuple(t.bfloat16() for t in (q, k, v))


def groups(x: torch.Tensor, scale: torch.Tensor, group: int) -> torch.Tensor:
    """int8 (B, L, H, D) times its (B, H, L/group) scales, as fp32 (B, L, H, D)."""
    per_group = scale.transpose(1, 2)[:, :, None, :, None]
    return (x.float().unflatten(1, (-1, group)) * per_group).flatten(1, 2)


def test_formats_and_shapes(qkv):
    inputs = sage_hopper.quantise(*qkv)
    expected = {
        "q": ((B, L, H, D), torch.int8),
        "q_scale": ((B, H, L // 16), torch.float32),
        "k": ((B, L, H, D), torch.int8),
        "k_scale": ((B, H, L // 128), torch.float32),
        "v": ((B, H, D, L), torch.float8_e4m3fn),
        "v_scale": ((B, H, D), torch.float32),
    }
    for name, (shape, dtype) in expected.items():
        tensor = getattr(inputs, name)
        assert (tuple(tensor.shape), tensor.dtype) == (shape, dtype), name
        assert tensor.is_contiguous(), name


def test_q_and_k_are_int8_per_group_and_k_is_smoothed(qkv):
    q, k, _ = (t.float() for t in qkv)
    inputs = sage_hopper.quantise(*qkv)
    q_back = groups(inputs.q, inputs.q_scale, 16)
    q_amax = q.unflatten(1, (-1, 16)).abs().amax(dim=(2, 4))  # (B, L/16, H)
    step = (q_amax / 127).transpose(1, 2)
    assert torch.allclose(inputs.q_scale, step)
    bound = step.transpose(1, 2)[:, :, None, :, None] / 2 * 1.001
    assert ((q_back - q).unflatten(1, (-1, 16)).abs() <= bound).all()
    assert inputs.q.abs().max() == 127
    # the loud first group has its own scale; the second group keeps its fine one
    assert inputs.q_scale[:, :, 0].min() > 4 * inputs.q_scale[:, :, 1].max()

    k_mean = k.mean(dim=1, keepdim=True)
    k_back = groups(inputs.k, inputs.k_scale, 128) + k_mean
    k_step = inputs.k_scale.transpose(1, 2)[:, :, None, :, None]
    assert ((k_back - k).unflatten(1, (-1, 128)).abs() <= k_step / 2 * 1.001).all()
    assert (inputs.k.unflatten(1, (-1, 128)).abs().amax(dim=(2, 4)) == 127).all()
    assert (inputs.q.unflatten(1, (-1, 16)).abs().amax(dim=(2, 4)) == 127).all()
    # smoothing: the channel bias is gone before the INT8 rounding, so the step is small
    assert inputs.k_scale.max() < (k.abs().amax() / 127) / 2


def test_v_is_fp8_per_channel_in_the_kernels_token_order(qkv):
    v = qkv[2].float()
    inputs = sage_hopper.quantise(*qkv)
    assert torch.allclose(inputs.v_scale, v.abs().amax(dim=1) / 448)
    v_back = inputs.v.float() * inputs.v_scale[..., None]  # (B, H, D, L)
    tokens = (torch.arange(L).view(-1, 16)[:, torch.tensor(KERNEL_V_ORDER)]).flatten()
    expected = v.permute(0, 2, 3, 1)[..., tokens]
    # e4m3 keeps 3 mantissa bits: half a step is 1/16 of the value (or a subnormal step)
    slack = expected.abs() / 16 + inputs.v_scale[..., None] * 2.0**-9
    assert ((v_back - expected).abs() <= slack * 1.001).all()
    assert sage_hopper.V_ORDER == KERNEL_V_ORDER


def contract(q8, q_scale, k8, k_scale, v8) -> torch.Tensor:
    """What both Hopper kernels compute from sage_hopper's inputs, in fp32: INT8 Q.Kᵀ times both
    scales and 1/√D, softmax, times FP8 V (B, H, D, L) read back in KERNEL_V_ORDER; (B, L, H, D)
    before V's channel scale."""
    q, k = groups(q8, q_scale, 16), groups(k8, k_scale, 128)
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) * q8.shape[-1] ** -0.5
    inverse = torch.argsort(torch.tensor(KERNEL_V_ORDER, device=v8.device))
    v = v8.float().unflatten(-1, (-1, 16))[..., inverse].flatten(-2).permute(0, 3, 1, 2)
    return torch.einsum("bhlm,bmhd->blhd", torch.softmax(scores, dim=-1), v)


@pytest.fixture(scope="module")
def fake_kernel():
    """The Hopper kernel's contract as a CPU op under its own name: it checks what the kernel
    checks (dtypes, V as (B, D, H, L) for (B, L, H, D) Q and K, the scale shapes of per-warp
    granularity) and computes in fp32 what the kernel computes: INT8 Q.Kᵀ times both scales
    and sm_scale, softmax, FP8 V read back in KERNEL_V_ORDER times its channel scale."""
    name = "sageattention_sm90::qk_int8_sv_f8_accum_f32_fuse_v_scale_attn_inst_buf"
    if torch._C._dispatch_has_kernel(name):
        pytest.skip("SageAttention's own kernel is registered in this process")
    calls = []

    @torch.library.custom_op(name, mutates_args=("output",), device_types="cpu")
    def kernel(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output: torch.Tensor,
        query_scale: torch.Tensor,
        key_scale: torch.Tensor,
        value_scale: torch.Tensor,
        tensor_layout: int,
        is_causal: int,
        qk_quant_gran: int,
        sm_scale: float,
        return_lse: int,
    ) -> torch.Tensor:
        b, n, h, d = query.shape
        assert (tensor_layout, is_causal, qk_quant_gran, return_lse) == (0, 0, 2, 0)
        assert query.dtype == key.dtype == torch.int8 and value.dtype == torch.float8_e4m3fn
        assert tuple(key.shape) == (b, n, h, d) and tuple(value.shape) == (b, d, h, n)
        assert value.stride(-1) == 1 and query.is_contiguous() and key.is_contiguous()
        assert tuple(query_scale.shape) == (b, h, n // 16) and query_scale.is_contiguous()
        assert tuple(key_scale.shape) == (b, h, n // 128) and key_scale.is_contiguous()
        assert tuple(value_scale.shape) == (b, h, d)
        assert sm_scale == d**-0.5
        stored = value.permute(0, 2, 1, 3)  # (B, H, D, L)
        out = contract(query, query_scale, key, key_scale, stored) * value_scale[:, None]
        output.copy_(out.to(output.dtype))
        calls.append(n)
        return torch.empty(0)

    @kernel.register_fake
    def _(query, key, value, output, *rest) -> torch.Tensor:
        return torch.empty(0)

    return calls


@pytest.fixture
def sage_lib(monkeypatch):
    """SageAttention's own kernel selected (where flash-attn-4 is installed, sage_fa4 would be)."""
    monkeypatch.setattr(sage_hopper, "_kernel", "sageattention")


def test_attention_through_the_kernels_contract_is_attention(qkv, fake_kernel, sage_lib):
    out = sage_hopper.attention(*qkv)
    assert fake_kernel[-1] == L
    assert out.dtype == qkv[0].dtype and out.shape == qkv[0].shape
    exact = exact_attention(*qkv)
    error = (out.float() - exact).norm() / exact.norm()
    assert error < 0.05, error
    # callers hand over slices of the fused q/k/v product: not contiguous, same result
    fused = torch.cat(qkv, dim=-1)
    views = fused.split(D, dim=-1)
    assert not views[0].is_contiguous()
    assert torch.equal(sage_hopper.attention(*views), out)


def test_sage_on_hopper_quantises_only_inside_compiled_blocks(
    qkv, fake_kernel, sage_lib, monkeypatch
):
    from cosmos_posttrain import attention_kernels

    eager = []
    monkeypatch.setattr(attention_kernels, "sage_attention", lambda *t: eager.append(1) or t[0])
    attention_kernels.sage_hopper_attention(*qkv)  # eager: sageattn's own kernels
    assert eager == [1]
    compiled = torch.compile(attention_kernels.sage_hopper_attention, fullgraph=True)
    before = len(fake_kernel)
    out = compiled(*qkv)
    assert len(fake_kernel) == before + 1 and eager == [1]
    assert torch.allclose(out.float(), sage_hopper.attention(*qkv).float(), atol=2e-2)


def test_sage_takes_this_path_only_on_hopper_and_for_shapes_it_fits(qkv):
    from cosmos_posttrain.attention_kernels import attention_kernel, sage_attention

    assert not sage_hopper.available("cpu")
    assert attention_kernel("sage", "cpu") is sage_attention  # sageattn, which says what lacks
    assert sage_hopper.takes(*qkv)
    assert not sage_hopper.takes(*(t[:, :144] for t in qkv))  # 9 Q groups, not whole K blocks
    assert not sage_hopper.takes(qkv[0], qkv[1][:, :144], qkv[2][:, :144])
    assert not sage_hopper.takes(*(t.float() for t in qkv))
    assert not sage_hopper.takes(*(t[..., :96] for t in qkv))


@pytest.fixture
def fa4_contract(monkeypatch):
    """sage_fa4 selected, with the kernel's contract computed on the CPU in its place: bf16
    (B, L, H, D) before V's channel scale, from V as sage_hopper stores it."""
    calls = []

    def kernel(q8, q_scale, k8, k_scale, v8):
        assert q8.dtype == k8.dtype == torch.int8 and v8.dtype == torch.float8_e4m3fn
        assert q8.is_contiguous() and k8.is_contiguous() and v8.is_contiguous()
        calls.append(q8.shape[1])
        return contract(q8, q_scale, k8, k_scale, v8).bfloat16().contiguous()

    monkeypatch.setattr(sage_hopper, "_fa4_kernel", kernel)
    monkeypatch.setattr(sage_hopper, "_kernel", "fa4")
    return calls


def test_the_fa4_kernels_path_is_attention_eager_and_compiled(qkv, fa4_contract, monkeypatch):
    from cosmos_posttrain import attention_kernels

    out = sage_hopper.attention(*qkv)
    assert fa4_contract == [L] and out.dtype == qkv[0].dtype and out.shape == qkv[0].shape
    exact = exact_attention(*qkv)
    assert (out.float() - exact).norm() / exact.norm() < 0.05
    # with sage_fa4 selected, eager calls quantise here too: sageattn may not be installed
    monkeypatch.setattr(attention_kernels, "sage_attention", lambda *t: pytest.fail("sageattn"))
    assert torch.equal(attention_kernels.sage_hopper_attention(*qkv), out)
    compiled = torch.compile(attention_kernels.sage_hopper_attention, fullgraph=True)
    assert torch.allclose(compiled(*qkv).float(), out.float(), atol=2e-2)
    assert len(fa4_contract) == 3
    # shapes sage_fa4 does not take get exact attention, not a kernel that was not selected
    short = tuple(t[:, :144] for t in qkv)
    got = attention_kernels.sage_hopper_attention(*short)
    assert len(fa4_contract) == 3
    assert torch.allclose(got.float(), exact_attention(*short), atol=2e-2)


def test_the_fa4_op_and_its_fake_agree(qkv, fa4_contract):
    inputs = sage_hopper.quantise(*qkv)
    # the fake's shapes, strides and dtype against the op's output (the other checks compare
    # inputs with arithmetic PyTorch lacks for FP8 on the CPU)
    torch.library.opcheck(
        torch.ops.cosmos_posttrain.sage_fa4.default,
        tuple(inputs[:5]),
        test_utils=("test_faketensor",),
    )


def test_sage_fa4_takes_128_channels_only(qkv, monkeypatch):
    narrow = tuple(t[..., :64] for t in qkv)
    monkeypatch.setattr(sage_hopper, "_kernel", "sageattention")
    assert sage_hopper.takes(*narrow) and sage_hopper.takes(*qkv)
    monkeypatch.setattr(sage_hopper, "_kernel", "fa4")
    assert not sage_hopper.takes(*narrow) and sage_hopper.takes(*qkv)


def test_select_prefers_sage_fa4_and_keeps_its_answer(monkeypatch):
    problem = {"fa4": None}
    built = {"sageattention": True}
    monkeypatch.setattr(sage_hopper, "_kernel", None)
    monkeypatch.setattr(sage_hopper, "fa4_problem", lambda: problem["fa4"])
    monkeypatch.setattr(sage_hopper, "_sageattention_built", lambda: built["sageattention"])
    assert sage_hopper.select() == "fa4"
    problem["fa4"] = "needs flash-attn-4==4.0.0b36"
    assert sage_hopper.select() == "fa4"  # kept: the compiled blocks read it
    monkeypatch.setattr(sage_hopper, "_kernel", None)
    assert sage_hopper.select() == "sageattention"  # where sage_fa4's packages are missing
    built["sageattention"] = False
    monkeypatch.setattr(sage_hopper, "_kernel", None)
    assert sage_hopper.select() is None
    with pytest.raises(RuntimeError, match="'sageattention' is not built"):
        sage_hopper.select("sageattention")
    with pytest.raises(RuntimeError, match="'fa4' needs flash-attn-4"):
        sage_hopper.select("fa4")
    with pytest.raises(ValueError, match="one of"):
        sage_hopper.select("sage_fa4")


def test_the_fa4_kernel_runs_only_with_the_versions_it_was_built_on(monkeypatch):
    versions = dict(sage_hopper.FA4_PINNED)
    monkeypatch.setattr(sage_hopper.metadata, "version", lambda dist: versions[dist])
    monkeypatch.setattr(sage_hopper, "_kernel", None)
    versions["quack-kernels"] = "0.7.0"
    assert sage_hopper.fa4_problem() == "is built on quack-kernels 0.6.5, and this is 0.7.0"
    with pytest.raises(RuntimeError, match="'fa4' is built on quack-kernels 0.6.5"):
        sage_hopper.select("fa4")
    versions.pop("flash-attn-4")

    def missing(dist):
        if dist not in versions:
            raise sage_hopper.metadata.PackageNotFoundError(dist)
        return versions[dist]

    monkeypatch.setattr(sage_hopper.metadata, "version", missing)
    assert "needs flash-attn-4==4.0.0b36" in sage_hopper.fa4_problem()


GPU_FA4 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


@pytest.mark.skipif(
    not GPU_FA4 or sage_hopper.fa4_problem() is not None,
    reason="needs a Hopper GPU and flash-attn-4 at sage_hopper.FA4_PINNED",
)
@pytest.mark.parametrize(
    "shape,q_gain,mean",
    [((1, 4608, 2), 1.0, 0.0), ((2, 1024, 3), 3.0, 0.0), ((1, 16384, 2), 1.0, 3.0)],
)
def test_the_real_fa4_kernel_computes_the_contract(shape, q_gain, mean, monkeypatch):
    """Against exact attention of the quantised inputs the kernel adds only P's rounding to FP8
    (about 3% here). The mean of 3 in Q, K and V is the case that shows O summed in the FP8
    product's own accumulator (about 22 bits) across many tiles: 15% of the output was lost
    that way at 84,480 tokens (docs/BENCHMARKS.md, twelfth session)."""
    batch, tokens, heads = shape
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(batch, tokens, heads, D, generator=gen) + mean for _ in range(3))
    v = v * torch.linspace(0.25, 4.0, D)  # channels of different scales
    q, k, v = ((t * g).bfloat16().cuda() for t, g in ((q, q_gain), (k, 1.0), (v, 1.0)))
    inputs = sage_hopper.quantise(q, k, v)
    monkeypatch.setattr(sage_hopper, "_kernel", None)
    assert sage_hopper.select("fa4") == "fa4"
    real = sage_hopper._run(inputs, torch.bfloat16).float()
    quantised = contract(*inputs[:5]) * inputs.v_scale[:, None]
    exact = exact_attention(q, k, v)
    centre = exact.mean(dim=1, keepdim=True)  # random attention lands near V's mean

    def relative(a, b):
        return ((a - centre - (b - centre)).norm() / (b - centre).norm()).item()

    errors = {"real": relative(real, exact), "contract": relative(quantised, exact)}
    print(shape, q_gain, mean, errors, relative(real, quantised))  # shown with pytest -s
    assert relative(real, quantised) < 0.08, errors
    assert errors["real"] < errors["contract"] + 0.08, errors
    assert abs(real.norm() / quantised.norm() - 1) < 0.02
