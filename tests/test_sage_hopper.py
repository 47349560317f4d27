"""The inputs `sage_hopper` prepares for SageAttention 2's Hopper kernel: formats and layout.

The kernel itself needs an H100 (its speed and error are in docs/BENCHMARKS.md); here the
quantised tensors are read back the way the kernel reads them and compared with the originals.
"""

from __future__ import annotations

import pytest
import torch

from cosmos_posttrain import sage_hopper

B, L, H, D = 2, 256, 3, 128


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
    # smoothing: the channel bias is gone before the INT8 rounding, so the step is small
    assert inputs.k_scale.max() < (k.abs().amax() / 127) / 2


def test_v_is_fp8_per_channel_in_the_kernels_token_order(qkv):
    v = qkv[2].float()
    inputs = sage_hopper.quantise(*qkv)
    assert torch.allclose(inputs.v_scale, v.abs().amax(dim=1) / 448)
    v_back = inputs.v.float() * inputs.v_scale[..., None]  # (B, H, D, L)
    order = torch.tensor(sage_hopper.V_ORDER)
    tokens = (torch.arange(L).view(-1, 16)[:, order]).flatten()  # token at each stored place
    expected = v.permute(0, 2, 3, 1)[..., tokens]
    # e4m3 keeps 3 mantissa bits: half a step is 1/16 of the value (or a subnormal step)
    slack = expected.abs() / 16 + inputs.v_scale[..., None] * 2.0**-9
    assert ((v_back - expected).abs() <= slack * 1.001).all()
    assert sorted(sage_hopper.V_ORDER) == list(range(16))


def test_attention_from_the_quantised_inputs_is_attention(qkv):
    """The kernel's arithmetic in fp32 on what quantise() gives: INT8 Q.Kᵀ times both scales,
    softmax, FP8 V back in token order times its scale, is attention to within the rounding."""
    q, k, v = (t.float() for t in qkv)
    inputs = sage_hopper.quantise(*qkv)
    q_back = groups(inputs.q, inputs.q_scale, 16)
    scores = torch.einsum("blhd,bmhd->bhlm", q_back, groups(inputs.k, inputs.k_scale, 128))
    inverse = torch.argsort(torch.tensor(sage_hopper.V_ORDER))
    v_stored = (inputs.v.float() * inputs.v_scale[..., None]).unflatten(-1, (-1, 16))
    v_back = v_stored[..., inverse].flatten(-2).permute(0, 3, 1, 2)  # (B, L, H, D)
    out = torch.einsum("bhlm,bmhd->blhd", torch.softmax(scores * D**-0.5, dim=-1), v_back)
    exact = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ).transpose(1, 2)
    error = (out - exact).norm() / exact.norm()
    assert error < 0.05, error
    # and the order matters: reading V in plain token order is far off
    plain = torch.einsum(
        "bhlm,bmhd->blhd",
        torch.softmax(scores * D**-0.5, dim=-1),
        v_stored.flatten(-2).permute(0, 3, 1, 2),
    )
    assert (plain - exact).norm() / exact.norm() > 0.5


def test_sage_takes_this_path_only_on_hopper_and_for_shapes_it_fits(qkv):
    from cosmos_posttrain.attention_kernels import attention_kernel, sage_attention

    assert not sage_hopper.available("cpu")
    assert attention_kernel("sage", "cpu") is sage_attention  # sageattn, which says what lacks
    assert sage_hopper.takes(qkv[0])
    assert not sage_hopper.takes(qkv[0][:, :200])  # 200 tokens: not whole key blocks
    assert not sage_hopper.takes(qkv[0].float())
    assert not sage_hopper.takes(qkv[0][..., :96])
