"""Building the frozen base, the trained control branch, the tokenizer and the text encoder.

The architectures are diffusers' `CosmosTransformer3DModel` and `CosmosControlNetModel`. Only the
control branch's own parts train (its patch embedder and control blocks); its copies of the
base's shared modules (time embedding, text projection, base patch embedder) stay equal to the
base's and frozen, as in the reference.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKLWan, CosmosControlNetModel, CosmosTransformer3DModel
from torch import nn

from .errors import CosmosPosttrainError
from .hub import check_repo_access
from .text_encoders import minilm_encoder, qwen_encoder
from .tokenizers import PixelTokenizer, WanTokenizer

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

TRAINED_PREFIXES = ("patch_embed.", "control_blocks.")
SHARED_MODULES = ("time_embed", "crossattn_proj", "learnable_pos_embed", "img_context_proj")

TINY_TRANSFORMER = dict(
    in_channels=13,
    out_channels=12,
    num_attention_heads=2,
    attention_head_dim=64,
    num_layers=4,
    mlp_ratio=2.0,
    text_embed_dim=128,
    adaln_lora_dim=32,
    max_size=(16, 64, 64),
    patch_size=(1, 2, 2),
    rope_scale=(1.0, 1.0, 1.0),
    concat_padding_mask=True,
    extra_pos_embed_type=None,
    use_crossattn_projection=True,
    crossattn_proj_in_channels=2304,
    encoder_hidden_states_channels=128,
    controlnet_block_every_n=2,
)
TINY_CONTROLNET = dict(
    n_controlnet_blocks=2,
    in_channels=14,
    latent_channels=14,
    model_channels=128,
    num_attention_heads=2,
    attention_head_dim=64,
    mlp_ratio=2.0,
    text_embed_dim=128,
    adaln_lora_dim=32,
    patch_size=(1, 2, 2),
    max_size=(16, 64, 64),
    rope_scale=(1.0, 1.0, 1.0),
    extra_pos_embed_type=None,
    use_crossattn_projection=True,
    crossattn_proj_in_channels=2304,
    encoder_hidden_states_channels=128,
)
# Cosmos-Transfer2.5-2B, as diffusers' conversion script defines it.
TRANSFORMER_2B = dict(
    in_channels=17,
    out_channels=16,
    num_attention_heads=16,
    attention_head_dim=128,
    num_layers=28,
    mlp_ratio=4.0,
    text_embed_dim=1024,
    adaln_lora_dim=256,
    max_size=(128, 240, 240),
    patch_size=(1, 2, 2),
    rope_scale=(1.0, 3.0, 3.0),
    concat_padding_mask=True,
    extra_pos_embed_type=None,
    use_crossattn_projection=True,
    crossattn_proj_in_channels=100352,
    encoder_hidden_states_channels=1024,
    controlnet_block_every_n=7,
)
CONTROLNET_2B = dict(
    n_controlnet_blocks=4,
    in_channels=130,
    latent_channels=18,
    model_channels=2048,
    num_attention_heads=16,
    attention_head_dim=128,
    mlp_ratio=4.0,
    text_embed_dim=1024,
    adaln_lora_dim=256,
    patch_size=(1, 2, 2),
    max_size=(128, 240, 240),
    rope_scale=(1.0, 3.0, 3.0),
    extra_pos_embed_type=None,
    use_crossattn_projection=True,
    crossattn_proj_in_channels=100352,
    encoder_hidden_states_channels=1024,
)


@dataclass
class Models:
    transformer: CosmosTransformer3DModel
    controlnet: CosmosControlNetModel
    tokenizer: nn.Module
    text_encoder: nn.Module


def is_trained(name: str) -> bool:
    return name.startswith(TRAINED_PREFIXES)


def freeze(models: Models) -> list[nn.Parameter]:
    """Freeze everything but the control branch's own parts; return those parameters."""
    models.transformer.requires_grad_(False).eval()
    models.tokenizer.requires_grad_(False).eval()
    models.text_encoder.requires_grad_(False).eval()
    trained = []
    for name, param in models.controlnet.named_parameters():
        param.requires_grad_(is_trained(name))
        if param.requires_grad:
            trained.append(param)
    return trained


@torch.no_grad()
def controlnet_from_base(transformer: CosmosTransformer3DModel, **kwargs) -> CosmosControlNetModel:
    """A new control branch: shared modules copied from the base, control block i from base
    block i (the reference's "first_n"), and the zero-initialised projections that make the
    untrained branch add nothing."""
    controlnet = CosmosControlNetModel(**kwargs)
    sync_shared_modules(transformer, controlnet)
    base_patch = transformer.patch_embed.proj.weight
    controlnet.patch_embed_base.proj.weight.copy_(base_patch)
    for i, block in enumerate(controlnet.control_blocks):
        block.load_state_dict(transformer.transformer_blocks[i].state_dict(), strict=False)
        for proj in (getattr(block, "before_proj", None), getattr(block, "after_proj", None)):
            if proj is not None:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
    return controlnet


@torch.no_grad()
def sync_shared_modules(transformer: nn.Module, controlnet: nn.Module) -> None:
    """Make the branch's copies of the base's shared modules equal to the base's."""
    for name in SHARED_MODULES:
        source, target = getattr(transformer, name, None), getattr(controlnet, name, None)
        if source is not None and target is not None:
            target.load_state_dict(source.state_dict())
    controlnet.patch_embed_base.load_state_dict(transformer.patch_embed.state_dict())


def load_state_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Split a `.pt` file into {"transformer": ..., "controlnet": ...} state dicts.

    Keys may carry the reference's `net.` prefix; EMA files from conversion have plain names.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CosmosPosttrainError(f"{path}: not a state dict")
    parts: dict[str, dict[str, torch.Tensor]] = {"transformer": {}, "controlnet": {}}
    for key, value in state.items():
        name = key.removeprefix("net.")
        head, _, rest = name.partition(".")
        if head in parts:
            parts[head][rest] = value
    if not parts["transformer"] and not parts["controlnet"]:
        raise CosmosPosttrainError(f"{path}: holds no 'transformer.*' or 'controlnet.*' weights")
    return parts


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or (missing and len(missing) == len(list(module.state_dict()))):
        raise CosmosPosttrainError(
            f"{path}: the {what} weights do not fit this model "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. "
            f"{(unexpected or missing)[:3]})"
        )
    if missing:
        log.info(
            "%s: %d %s tensors not in the file keep their initial values", path, len(missing), what
        )


def build_models(config: DictConfig, device: torch.device) -> Models:
    preset = config.model.preset
    control = str(config.model.config.hint_key)
    load_path = str(config.checkpoint.load_path or "")
    if preset == "tiny":
        models = _tiny_models(config, Path(load_path) if load_path else None)
    elif preset == "2b":
        models = _pretrained_models(config, control, Path(load_path) if load_path else None)
    else:
        raise CosmosPosttrainError(f"model.preset={preset!r}: use 2b or tiny")
    models.transformer.to(device)
    models.controlnet.to(device)
    models.tokenizer.to(device)
    models.text_encoder.to(device)
    return models


def _tiny_models(config: DictConfig, load_path: Path | None) -> Models:
    torch.manual_seed(int(config.trainer.seed))
    transformer = CosmosTransformer3DModel(**TINY_TRANSFORMER)
    parts = {"transformer": {}, "controlnet": {}}
    if load_path is not None:
        if not load_path.is_file():
            raise CosmosPosttrainError(f"checkpoint.load_path={load_path}: no such file")
        parts = load_state_file(load_path)
        if parts["transformer"]:
            _load_into(transformer, parts["transformer"], "transformer", load_path)
    else:
        log.warning("tiny preset without checkpoint.load_path: the base model is random")
    controlnet = controlnet_from_base(transformer, **TINY_CONTROLNET)
    if parts["controlnet"]:
        _load_into(controlnet, parts["controlnet"], "control branch", load_path)
        sync_shared_modules(transformer, controlnet)
    text = minilm_encoder(int(config.model.text_encoder.max_length))
    return Models(transformer, controlnet, PixelTokenizer(), text)


def _pretrained_models(config: DictConfig, control: str, load_path: Path | None) -> Models:
    pre = config.model.pretrained
    dtype = torch.bfloat16 if config.model.config.dtype == "bfloat16" else torch.float32
    control_rev = pre.controlnet_revision.format(control="blur" if control == "vis" else control)
    if not os.environ.get("HF_HUB_OFFLINE"):
        check_repo_access(pre.repo_id, pre.revision)
        check_repo_access(pre.text_encoder_repo_id, pre.text_encoder_revision)
    transformer = CosmosTransformer3DModel.from_pretrained(
        pre.repo_id, subfolder="transformer", revision=pre.revision, torch_dtype=dtype
    )
    vae = AutoencoderKLWan.from_pretrained(
        pre.repo_id, subfolder="vae", revision=pre.revision, torch_dtype=dtype
    )
    if load_path is not None and load_path.suffix == ".pt":
        controlnet = controlnet_from_base(transformer, **CONTROLNET_2B).to(dtype)
        parts = load_state_file(load_path)
        if parts["transformer"]:
            _load_into(transformer, parts["transformer"], "transformer", load_path)
        _load_into(controlnet, parts["controlnet"], "control branch", load_path)
        sync_shared_modules(transformer, controlnet)
    elif load_path is not None:
        controlnet = CosmosControlNetModel.from_pretrained(load_path, torch_dtype=dtype)
    else:
        controlnet = CosmosControlNetModel.from_pretrained(
            pre.repo_id, revision=control_rev, torch_dtype=dtype
        )
    text = qwen_encoder(
        pre.text_encoder_repo_id,
        pre.text_encoder_revision,
        int(config.model.text_encoder.max_length),
        dtype,
    )
    return Models(transformer, controlnet, WanTokenizer(vae), text)
