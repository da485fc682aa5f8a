"""A decoder's causal-LM head, for generation tasks, built beside the base model the backbone loads.

:mod:`autopeft.training.backbones` loads every decoder as its base model (``AutoModel``: final
hidden states, no LM head), which is what the classification heads read. A generation task needs
the head that turns hidden states into next-token logits; :func:`build_lm_head` makes it the way
``AutoModelForCausalLM`` would have:

* **Tied families** (``config.tie_word_embeddings``: GPT-2, Gemma, Llama 3.2 1B, Qwen2.5 0.5B):
  the input embedding matrix itself, shared and not copied, as ``transformers`` ties it. It
  trains exactly when the embeddings do (full fine-tuning) and adds no parameter.
* **Untied, random weights** (the ``*_arch`` and ``tiny_*`` configs): a new bias-free linear
  layer drawn as ``transformers`` draws it (normal, std ``initializer_range``), from a fixed
  seed, so that rebuilding the backbone (an export being loaded) rebuilds the same head whatever
  the random state is then.
* **Untied, pretrained** (Mistral, Pythia, a saved ``*ForCausalLM`` folder): the checkpoint's own
  head tensor, read from its safetensors files alone (its name from the ``*ForCausalLM`` layout,
  built on the meta device), else from ``AutoModelForCausalLM.from_pretrained``. A checkpoint
  that has no head (a base model saved alone) gets a fresh one, with a warning, as
  ``transformers`` does.

Gemma 2's final-logit soft-capping (``final_logit_softcapping``) is applied as its causal-LM
model applies it. The head is frozen unless the whole model is fine-tuned, as peft leaves a
causal LM's head: PEFT adapts the layers that feed it.
"""

from __future__ import annotations

import json
import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from autopeft.errors import ConfigError

log = logging.getLogger("autopeft.training")

#: Seed of a random-weight backbone's untied LM head (see the module docstring).
HEAD_SEED = 0


class LMHead(nn.Module):
    """Next-token logits from hidden states: ``hidden @ W.T``, soft-capped where the family caps them.

    Args:
        weight: An own weight (vocab, D_h) for an untied head, or None for a tied one.
        embeddings: The backbone's input embeddings, whose matrix a tied head reads. It is held
            outside the module tree, so the shared matrix stays the backbone's parameter and is
            neither counted nor saved twice.
        softcap: ``final_logit_softcapping`` (Gemma 2), or None.

    """

    #: Every position predicts its next token: nothing is pooled (recorded in exports).
    pooling = "none"

    def __init__(self, weight: torch.Tensor | None, embeddings: nn.Module | None, softcap: float | None) -> None:
        super().__init__()
        if (weight is None) == (embeddings is None):
            raise ValueError("an LM head has its own weight or ties the input embeddings, not both")
        self.weight = None if weight is None else nn.Parameter(weight)
        self._tied = (embeddings,) if embeddings is not None else ()
        self.softcap = softcap

    @property
    def tied(self) -> bool:
        """Whether the head reads the input embedding matrix."""
        return bool(self._tied)

    def matrix(self) -> torch.Tensor:
        """The (vocab, D_h) output matrix."""
        return self._tied[0].weight if self._tied else self.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map hidden states (..., D_h) to logits (..., vocab)."""
        logits = F.linear(hidden, self.matrix())
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _untied_weight(config: PretrainedConfig, like: torch.Tensor) -> torch.Tensor:
    """A fresh (vocab, D_h) matrix, normal with std ``initializer_range``, from :data:`HEAD_SEED`."""
    shape = (config.vocab_size, config.hidden_size)
    if like.is_meta:
        return torch.empty(shape, dtype=like.dtype, device="meta")
    generator = torch.Generator().manual_seed(HEAD_SEED)
    std = float(getattr(config, "initializer_range", 0.02))
    weight = torch.randn(shape, generator=generator, dtype=torch.float32) * std
    return weight.to(device=like.device, dtype=like.dtype)


def _head_key(config: PretrainedConfig) -> str:
    """The name of the output embedding's weight in the family's ``*ForCausalLM`` checkpoints."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    return next(name for name, module in model.named_modules() if module is head) + ".weight"


def _safetensors_tensor(location: str, key: str) -> tuple[torch.Tensor | None, bool]:
    """``(tensor, found files)``: ``key`` from the checkpoint's safetensors files at ``location``.

    ``found files`` is False when the checkpoint has no safetensors files at all (an old
    ``pytorch_model.bin``), in which case the caller loads the whole causal-LM model instead.
    """
    from safetensors import safe_open
    from transformers.utils import cached_file

    kwargs = {"_raise_exceptions_for_missing_entries": False, "_raise_exceptions_for_connection_errors": False}
    index = cached_file(location, "model.safetensors.index.json", **kwargs)
    if index is not None:
        with open(index, encoding="utf-8") as handle:
            shard = json.load(handle).get("weight_map", {}).get(key)
        if shard is None:
            return None, True
        files = [cached_file(location, shard, **kwargs)]
    else:
        files = [cached_file(location, "model.safetensors", **kwargs)]
    if files[0] is None:
        return None, False
    with safe_open(files[0], framework="pt") as handle:
        return (handle.get_tensor(key) if key in handle.keys() else None), True  # noqa: SIM118 - not a dict


def pretrained_head_weight(location: str, config: PretrainedConfig) -> torch.Tensor | None:
    """The untied LM head matrix of the checkpoint at ``location``, or None when it has none.

    Args:
        location: A folder written by ``save_pretrained`` or a hub id (as the base model was
            loaded from).
        config: The checkpoint's model config.

    Raises:
        ConfigError: If the checkpoint cannot be read.

    """
    key = _head_key(config)
    try:
        tensor, found = _safetensors_tensor(location, key)
        if found:
            return tensor
        from transformers import AutoModelForCausalLM

        model, info = AutoModelForCausalLM.from_pretrained(location, output_loading_info=True)
        # from_pretrained fills a head the file lacks with random values: only a stored one counts.
        if key in set(info.get("missing_keys", ())):
            return None
        return model.get_output_embeddings().weight.detach().clone()
    except OSError as err:
        raise ConfigError(
            f"could not read the LM head of the checkpoint at {location!r} ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); a generation task needs it"
        ) from err


def build_lm_head(encoder: PreTrainedModel) -> LMHead:
    """The causal-LM head of the decoder base model ``encoder`` (see the module docstring).

    Args:
        encoder: The backbone's base model, as loaded (random or pretrained weights, or on the
            meta device for parameter counting).

    """
    config = encoder.config
    embeddings = encoder.get_input_embeddings()
    softcap = getattr(config, "final_logit_softcapping", None)
    if getattr(config, "tie_word_embeddings", False):
        return LMHead(None, embeddings, softcap)
    like = embeddings.weight
    location = getattr(encoder, "name_or_path", "") or ""
    if location and not like.is_meta:
        weight = pretrained_head_weight(location, config)
        if weight is not None:
            return LMHead(weight.to(device=like.device, dtype=like.dtype), None, softcap)
        log.warning(
            "the checkpoint at %r has no LM head (a base model saved alone?): the generation task's head starts "
            "from random values, as AutoModelForCausalLM would start it",
            location,
        )
    return LMHead(_untied_weight(config, like), None, softcap)
