"""Decoder backbones: the tiny random families offline, the real shapes, custom folders, the last-token head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaModel, OPTConfig, OPTModel

from autopeft.errors import ConfigError
from autopeft.export import load_export, save_export
from autopeft.peft import DECODER_MODEL_TYPES, peft_from_config
from autopeft.training.backbones import load_backbone, load_tokenizer, shape_of
from autopeft.training.model import AutoPeftModel, LastTokenHead, last_token_index
from autopeft.training.offline_tokenizer import standin_bpe_tokenizer
from autopeft.training.train import TrainingJob, build, train_and_evaluate

#: The tiny random config of each decoder family, and whether it has grouped-query attention.
TINY = {
    "tiny_llama": ("llama", True),
    "tiny_qwen2": ("qwen2", True),
    "tiny_qwen3": ("qwen3", True),
    "tiny_mistral": ("mistral", True),
    "tiny_gemma": ("gemma", True),
    "tiny_gemma2": ("gemma2", True),
    "tiny_gemma3": ("gemma3_text", True),
    "tiny_gpt2": ("gpt2", False),
    "tiny_gpt_neox": ("gpt_neox", False),
}

#: Parameters of each architecture-only config's base model (no LM head), as the checkpoints
#: publish them (GPT-2 small 124,439,808; Llama-3.2-1B 1,235,814,400, tied; Qwen2.5-0.5B
#: 494,032,768, tied; Gemma-2-2B 2,614,341,888; Gemma-3-1B 999,885,952 (keras-hub's preset);
#: Mistral-7B-v0.1 7,241,732,096 less its 32000 x 4096 LM head; Pythia-160M 162,322,944 less its
#: untied 50304 x 768 output embedding): the shapes are the real ones.
ARCH_PARAMS = {
    "gpt2_arch": 124_439_808,
    "llama_3_2_1b_arch": 1_235_814_400,
    "qwen2_5_0_5b_arch": 494_032_768,
    "gemma2_2b_arch": 2_614_341_888,
    "gemma3_1b_arch": 999_885_952,
    "mistral_7b_arch": 7_241_732_096 - 32000 * 4096,
    "pythia_160m_arch": 162_322_944 - 50304 * 768,
}


def test_every_decoder_family_has_a_tiny_config() -> None:
    assert sorted(model_type for model_type, _ in TINY.values()) == sorted(DECODER_MODEL_TYPES)


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_decoder_loads_offline_with_its_shape(compose_cfg: Callable, name: str) -> None:
    model_type, gqa = TINY[name]
    backbone = load_backbone(compose_cfg(f"backbone={name}").backbone)
    shape = backbone.shape
    assert backbone.model.config.model_type == model_type and shape.is_decoder and backbone.pooling == "last"
    assert (shape.hidden_size, shape.num_layers, shape.num_heads, shape.intermediate_size) == (64, 2, 4, 128)
    assert shape.kv_heads == (2 if gqa else 4) and (shape.kv_heads < shape.num_heads) == gqa
    assert backbone.num_params == sum(p.numel() for p in backbone.model.parameters()) < 200_000
    assert shape_of(compose_cfg(f"backbone={name}").backbone) == shape
    tokenizer = backbone.tokenizer
    assert len(tokenizer) <= backbone.model.config.vocab_size and tokenizer.pad_token_id is not None
    batch = tokenizer(["a fine film", "not a fine film at all"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = backbone.model(**batch, use_cache=False).last_hidden_state
    assert out.shape == (2, batch["input_ids"].shape[1], 64) and torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "params"), list(ARCH_PARAMS.items()))
def test_architecture_configs_have_the_published_parameter_counts(
    compose_cfg: Callable, name: str, params: int
) -> None:
    backbone = load_backbone(compose_cfg(f"backbone={name}").backbone, weights=False)
    assert backbone.num_params == params


def test_grouped_query_attention_shapes_of_the_real_architectures(compose_cfg: Callable) -> None:
    shapes = {
        name: shape_of(compose_cfg(f"backbone={name}").backbone)
        for name in ("qwen2_5_0_5b_arch", "llama_3_2_1b_arch", "qwen3_0_6b_arch", "gemma3_1b_arch")
    }
    facts = {n: (s.hidden_size, s.num_layers, s.num_heads, s.kv_heads, s.intermediate_size) for n, s in shapes.items()}
    assert facts == {
        "qwen2_5_0_5b_arch": (896, 24, 14, 2, 4864),
        "llama_3_2_1b_arch": (2048, 16, 32, 8, 8192),
        "qwen3_0_6b_arch": (1024, 28, 16, 8, 3072),
        "gemma3_1b_arch": (1152, 26, 4, 1, 6912),
    }


def test_hub_decoder_offline_says_what_to_use_instead(compose_cfg: Callable) -> None:
    with pytest.raises(ConfigError, match=r"needs? network access.*\*_arch backbones"):
        load_backbone(compose_cfg("backbone=qwen2_5_0_5b").backbone, weights=False)


def _save_tiny_llama(folder: Path, pad: bool = True) -> None:
    config = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
    )
    config.vocab_size = 512
    LlamaModel(config).save_pretrained(folder)
    tokenizer = standin_bpe_tokenizer()
    if not pad:
        tokenizer.pad_token = None  # as Llama's and GPT-2's own tokenizers come
    tokenizer.save_pretrained(folder)


def test_custom_decoder_folder_loads_and_gets_a_pad_token(compose_cfg: Callable, tmp_path: Path) -> None:
    _save_tiny_llama(tmp_path, pad=False)
    cfg = compose_cfg("backbone=custom", f"backbone.name_or_path={tmp_path}")
    backbone = load_backbone(cfg.backbone)
    assert backbone.model.config.model_type == "llama" and backbone.pooling == "last"
    assert backbone.shape.kv_heads == 2 and backbone.shape.num_heads == 4
    tokenizer = backbone.tokenizer
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    assert load_tokenizer(dict(cfg.backbone)).pad_token == tokenizer.eos_token  # the export's path too


def test_unsupported_family_is_one_line_naming_the_supported_ones(compose_cfg: Callable, tmp_path: Path) -> None:
    OPTModel(
        OPTConfig(hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2, word_embed_proj_dim=32)
    ).save_pretrained(tmp_path)
    cfg = compose_cfg("backbone=custom", f"backbone.name_or_path={tmp_path}")
    with pytest.raises(ConfigError) as caught:
        load_backbone(cfg.backbone, weights=False)
    message = str(caught.value)
    assert "\n" not in message and "has architecture (model_type) 'opt', which AutoPEFT does not support" in message
    assert "supported families: 'bert', 'roberta', 'llama', 'qwen2', 'qwen3', 'mistral', 'gemma'" in message
    assert "'gpt2', 'gpt_neox'" in message and "autopeft/peft/families.py" in message


def test_cls_pooling_on_a_decoder_is_refused(compose_cfg: Callable) -> None:
    with pytest.raises(ConfigError, match=r"backbone.pooling='cls' does not suit .* allowed there: 'last'"):
        load_backbone(compose_cfg("backbone=tiny_llama", "backbone.pooling=cls").backbone, weights=False)


def test_last_token_is_found_on_either_padding_side() -> None:
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 3, 0]
    assert last_token_index(left).tolist() == [3, 3, 3]
    torch.manual_seed(0)
    head = LastTokenHead(4, 2)
    hidden = torch.randn(3, 4, 4)
    # Close, not equal: a batched matmul and a single-row one may round differently (BLAS paths
    # differ with the machine's load); another token's score would differ by O(1).
    torch.testing.assert_close(head(hidden, right)[0], head.score(hidden[0, 2]))
    torch.testing.assert_close(head(hidden, left)[2], head.score(hidden[2, 3]))


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_a_padded_example_scores_as_it_does_alone(compose_cfg: Callable, name: str) -> None:
    torch.manual_seed(0)
    cfg = compose_cfg(f"backbone={name}", "peft=head_only")
    backbone = load_backbone(cfg.backbone)
    model = AutoPeftModel(backbone, peft_from_config(cfg.peft, backbone.shape), "classification", 3).eval()
    batch = backbone.tokenizer(["short", "a much longer sentence than the first"], ["yes", "no"], padding=True)
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    assert "token_type_ids" not in batch and mask[0, -1] == 0  # right padding, no segment ids
    length = int(mask[0].sum())
    with torch.no_grad():
        together = model(ids, mask)[0]
        alone = model(ids[:1, :length], mask[:1, :length])[0]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_head_only_smoke_training_on_a_tiny_llama(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("backbone=tiny_llama", "peft=head_only", "peft.sa_size=0", "task=snli_binary")
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path)
    assert record["status"] == "ok" and 0.0 <= record["score"] <= 1.0
    assert record["params"]["trainable_params"] == record["params"]["head_params"] == 64 * 2
    assert record["params"]["num_kv_heads"] == 2


def test_a_decoder_export_loads_back_and_scores_the_same(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("backbone=tiny_gemma2", "peft=lora", "peft.sa_size=0", "task=snli_binary")
    torch.manual_seed(int(cfg.seed))  # as training seeds it: the loader rebuilds the random backbone from the seed
    setup = build(TrainingJob.from_config(cfg))
    with torch.no_grad():  # a non-zero LoRA update, so that the round trip has something to lose
        for name, param in setup.model.named_parameters():
            if name.endswith("lora_b"):
                param.normal_(std=0.1)
    folder = save_export(setup.model, cfg, tmp_path / "export", tokenizer=setup.backbone.tokenizer)
    # peft loads a decoder's LoRA (tests/export/test_decoder_peft_export.py); adapters has no decoder models.
    assert (folder / "peft" / "adapter_config.json").is_file() and not (folder / "adapters").exists()
    predictor = load_export(folder)
    rows = [{"premise": "A man plays a guitar.", "hypothesis": "A man makes music."}]
    batch = setup.backbone.tokenizer(rows[0]["premise"], rows[0]["hypothesis"], return_tensors="pt")
    setup.model.eval()
    with torch.no_grad():
        expected = setup.model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(predictor.scores(rows), expected, atol=1e-5, rtol=1e-5)


def test_lora_smoke_training_on_a_tiny_qwen2(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("backbone=tiny_qwen2", "peft=lora", "peft.sa_size=0", "task=snli_binary")
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path)
    assert record["status"] == "ok"
    # r 8 on q (64 -> 64) and v (64 -> 2 key/value heads x 16 = 32) in 2 layers.
    assert record["params"]["trainable_peft_params"] == 2 * (8 * (64 + 64) + 8 * (64 + 32))


def test_regression_and_multiple_choice_heads_on_a_decoder(compose_cfg: Callable) -> None:
    cfg = compose_cfg("backbone=tiny_qwen3", "peft=head_only")
    backbone = load_backbone(cfg.backbone)
    spec = peft_from_config(cfg.peft, backbone.shape)
    regression = AutoPeftModel(backbone, spec, "regression", 1)
    ids = torch.randint(3, 500, (2, 3, 6))
    mask = torch.ones_like(ids)
    mask[:, :, 4:] = 0  # right padding inside every choice
    assert regression(ids[:, 0], mask[:, 0]).shape == (2,)
    choices = AutoPeftModel(load_backbone(cfg.backbone), spec, "multiple_choice", 3)
    assert choices(ids, mask).shape == (2, 3)
