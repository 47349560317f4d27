"""FlashAttention-4's kernels in the form PyTorch's SDPA flash registry calls them.

PyTorch (>= 2.11) routes its SDPA flash backend to flash-attn-4 by importing a module that has
`_flash_attn_fwd` and `_flash_attn_bwd`. torch 2.11 unpacks exactly (out, lse) from the forward,
while current flash-attn-4 releases return more; this module is the one PyTorch imports instead
of flash_attn.cute.interface: the same kernels, the forward's result trimmed to (out, lse).
(Newer torch unpacks `out, lse, *_` itself; the trim is then a no-op.)
"""

from __future__ import annotations

from typing import Any

import torch
from flash_attn.cute import interface


def _flash_attn_fwd(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse, *_ = interface._flash_attn_fwd(*args, **kwargs)
    return out, lse


_flash_attn_bwd = interface._flash_attn_bwd
