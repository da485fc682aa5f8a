"""Load AutoPEFT exports with AdapterHub's ``adapters`` and score their inputs (run in its own venv).

``adapters`` pins transformers 4, AutoPEFT needs 5, so :mod:`tests.export.test_adapters_roundtrip`
runs this file with the Python of a separate virtualenv. Each argument is a case folder written
by that test: ``case.json`` (the tiny encoder's model type and config, the adapters model class),
``base.safetensors`` (the backbone's weights), ``inputs.safetensors`` (a padded batch) and
``export/adapters/`` (the folder under test). For each case it loads the folder twice, as the
adapters documentation does:

* into the flex-head model (``BertAdapterModel``, ``RobertaAdapterModel``) with ``load_adapter(..., set_active=True)``:
  adapter and head, giving the task outputs (``logits``);
* into a plain ``BertModel`` / ``RobertaModel`` after ``adapters.init(model)``: the adapter alone, giving the
  encoder's token states (``hidden``), multiple-choice inputs flattened to one row per choice.

It writes ``adapters_out.safetensors`` into the case folder and prints one JSON line: per case,
the keys that were missing or unexpected when loading the base weights and the adapter, and
the library versions. It imports nothing from AutoPEFT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import adapters
import torch
import transformers
from safetensors.torch import load_file, save_file


def _config(spec: dict[str, Any]) -> transformers.PretrainedConfig:
    return transformers.AutoConfig.for_model(spec["model_type"], **spec["config"])


def _load_base(model: torch.nn.Module, base: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy the backbone weights in; return what did not fit (should be nothing)."""
    encoder = getattr(model, model.base_model_prefix, model)
    result = encoder.load_state_dict(base, strict=False)
    # adapters.init registers the word embeddings a second time (prompt tuning's
    # base_model_embeddings): a key that names a tensor already loaded under another name is not
    # missing. A fresh model holds no adapter parameter yet, so any other mismatch is a real one.
    tensors = encoder.state_dict(keep_vars=True)
    loaded = {tensors[key].data_ptr() for key in base if key in tensors}
    missing = [key for key in result.missing_keys if tensors[key].data_ptr() not in loaded]
    return {"missing": missing, "unexpected": list(result.unexpected_keys)}


def _with_head(case: Path, spec: dict[str, Any], base: dict[str, torch.Tensor], inputs: dict) -> tuple:
    model = getattr(adapters, spec["model_class"])(_config(spec))
    base_info = _load_base(model, base)
    info: dict[str, list[str]] = {}
    name = model.load_adapter(str(case / "export" / "adapters"), set_active=True, loading_info=info)
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    return logits, base_info, info, name, model.active_head


def _plain_encoder(case: Path, spec: dict[str, Any], base: dict[str, torch.Tensor], inputs: dict) -> tuple:
    model = transformers.AutoModel.from_config(_config(spec))
    adapters.init(model)
    base_info = _load_base(model, base)
    info: dict[str, list[str]] = {}
    name = model.load_adapter(str(case / "export" / "adapters"), set_active=True, loading_info=info)
    model.eval()
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in inputs.items()}
    with torch.no_grad():
        hidden = model(**flat).last_hidden_state
    return hidden, base_info, info, name


def main(cases: list[str]) -> None:
    """Score every case folder (see the module docstring)."""
    report: dict[str, Any] = {"adapters": adapters.__version__, "transformers": transformers.__version__}
    for folder in map(Path, cases):
        spec = json.loads((folder / "case.json").read_text())
        base = load_file(str(folder / "base.safetensors"))
        inputs = load_file(str(folder / "inputs.safetensors"))
        logits, head_base, head_info, name, active_head = _with_head(folder, spec, base, inputs)
        hidden, plain_base, plain_info, plain_name = _plain_encoder(folder, spec, base, inputs)
        save_file(
            {"logits": logits.float().contiguous(), "hidden": hidden.float().contiguous()},
            str(folder / "adapters_out.safetensors"),
        )
        report[folder.name] = {
            "name": name,
            "active_head": active_head,
            "flex_head": {"base": head_base, "adapter": head_info},
            "plain": {"name": plain_name, "base": plain_base, "adapter": plain_info},
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
