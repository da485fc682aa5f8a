"""The model card: ``README.md`` of an export folder, written from its manifest.

It says what the folder holds for a reader who has neither the run nor AutoPEFT's docs at hand:
the backbone and task, the configuration in words and as JSON, both parameter counts, the scores
with the split, protocol and seed they came from, how the configuration was found, and how to
load it with each library whose folder the export holds. Every number is the manifest's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from autopeft.data.protocol import record_scoring, scores_text

#: File name of the model card inside an export folder.
CARD_NAME = "README.md"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}%"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "n/a"


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _backbone_line(backbone: Mapping[str, Any]) -> str:
    where = backbone.get("name_or_path") or backbone.get("model_type") or ""
    source = backbone.get("source")
    if source == "random":
        return f"`{backbone.get('name')}`: random weights of the `{where}` architecture, rebuilt from the run's seed"
    return f"`{backbone.get('name')}` ({source}: `{where}`)"


def _params_section(params: Mapping[str, Any] | None) -> list[str]:
    if not params:
        return ["The training record gave no parameter counts."]
    backbone = params.get("backbone_params")
    peft = params.get("trainable_peft_params")
    peft_percent = 100.0 * peft / backbone if isinstance(peft, int) and backbone else None
    return [
        f"Percentages are of the {_number(backbone)} parameters of the pretrained backbone.",
        "",
        "| count | parameters | % of backbone |",
        "|:--|--:|--:|",
        f"| PEFT modules as deployed (the paper's count) | {_number(params.get('paper_params'))} "
        f"| {_percent(params.get('paper_percent'))} |",
        f"| trainable PEFT parameters (exact: biases, prefix MLP, ...) | {_number(peft)} | {_percent(peft_percent)} |",
        f"| task head | {_number(params.get('head_params'))} | |",
        f"| everything trained (PEFT and head) | {_number(params.get('trainable_params'))} "
        f"| {_percent(params.get('trainable_percent'))} |",
    ]


def _scores_section(manifest: Mapping[str, Any]) -> list[str]:
    scores = manifest.get("scores") or {}
    metrics = scores.get("metrics") or {}
    protocol, scoring = record_scoring(scores)
    lines = [
        f"One training run, seed {manifest.get('seed')}, status `{scores.get('status')}`; best epoch "
        f"{scores.get('best_epoch')} of {scores.get('epochs_trained')} trained. Main metric: "
        f"`{manifest.get('main_metric')}`, {_score(scores.get('score'))} on the validation split.",
        "",
        f"The test split is the {scores_text(protocol, scoring)}.",
        "",
        "| split | metric | value |",
        "|:--|:--|--:|",
    ]
    for split, role in (("validation", "validation (epochs selected on it)"), ("test", "test (reported)")):
        for metric, value in (metrics.get(split) or {}).items():
            lines.append(f"| {role} | {metric} | {_score(value)} |")
    return lines


def _found_section(found: Mapping[str, Any] | None) -> list[str]:
    found = found or {}
    mode = found.get("mode")
    if mode != "retrain":
        return [f"Trained directly as given (`mode={mode or 'train'}`), not taken from a search."]
    if found.get("configs_file"):
        head = f"Retrained (`mode=retrain`) from the configurations file `{found['configs_file']}`"
    else:
        head = (
            f"Retrained (`mode=retrain`) from the search run `{found.get('search_run')}` "
            f"(`select={found.get('select')}`)"
        )
    lines = [f"{head}: choice `{found.get('choice')}`."]
    if found.get("search_index") is not None:
        lines.append(
            f"It is evaluation {found['search_index']} of that search (`results.jsonl` index), searched on task "
            f"`{found.get('search_task')}` by `{found.get('search_method')}` with search score "
            f"{_score(found.get('search_score'))} (the search's own, low-fidelity training)."
        )
    pick = found.get("pick")
    if pick:
        lines.append(
            f"Picked as the best within {pick.get('budget_percent')}% parameters by `retrain.pick={pick.get('rule')}`."
        )
    return [" ".join(lines)]


def _generation_lines(entry: Mapping[str, Any], settings: bool) -> list[str]:
    """Python lines that tokenise prompts as AutoPEFT did and decode greedily with ``model`` and ``tokenizer``.

    The prompt is its prefix (a BOS) and its tokens without special tokens (a tokenizer that
    appends EOS would otherwise end it with the answer's stop token), padded on the left.
    ``settings``: pass the decoding settings to ``generate`` (a merged folder's
    ``generation_config.json`` holds them already).
    """
    prefix = entry.get("prompt_prefix_ids") or []
    tokens = "tokenizer(p, add_special_tokens=False)['input_ids']"
    pad = entry.get("pad_token_id")
    call = ["out = model.generate(input_ids=input_ids, attention_mask=attention_mask)"]
    if settings:
        call = [
            "out = model.generate(",
            f"    input_ids=input_ids, attention_mask=attention_mask, max_new_tokens={entry.get('max_new_tokens')},",
            f"    do_sample=False, eos_token_id={entry.get('eos_token_id')}, pad_token_id={pad},",
            ")",
        ]
    return [
        'prompts = ["..."]  # as the task writes them',
        f"ids = [{f'{prefix!r} + ' if prefix else ''}{tokens} for p in prompts]",
        "width = max(map(len, ids))",
        f"input_ids = torch.tensor([[{pad}] * (width - len(i)) + i for i in ids])",
        "attention_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])",
        *call,
        "answers = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)",
    ]


def _loading_section(manifest: Mapping[str, Any]) -> list[str]:
    backbone = manifest.get("backbone") or {}
    name_or_path = backbone.get("name_or_path") if backbone.get("source") in ("hub", "path", "auto") else None
    base = json.dumps(name_or_path) if name_or_path else "BACKBONE"
    # After the call's closing parenthesis: inside it, the comment would swallow the other arguments.
    note = "" if name_or_path else "  # BACKBONE: the backbone's weights, see below"
    generation = (manifest.get("task") or {}).get("type") == "generation"
    predict = (
        "model.predict([...])  # answers: greedy for a prompt, the likeliest for (prompt, candidate, ...)"
        if generation
        else "model.predict([...])  # label names; predict_proba, scores: probabilities, raw outputs"
    )
    lines = [
        "### AutoPEFT",
        "",
        "```python",
        "from autopeft.export import load_export",
        "",
        'model = load_export("path/to/this/folder")  # rebuilds the backbone, checks it, loads the weights',
        predict,
        "```",
    ]
    libraries = manifest.get("libraries") or {}
    peft = libraries.get("peft") or {}
    adapters = libraries.get("adapters") or {}
    if peft.get("written") and peft.get("auto_class") == "AutoModelForCausalLM":
        head = (
            "The adapter carries the LM head (`modules_to_save`): AutoPEFT built it, so the base checkpoint "
            "does not hold it."
            if peft.get("lm_head_saved")
            else "The LM head is the base model's own."
        )
        lines += [
            "",
            f"### peft (`{peft['folder']}/`, format tested with {peft['format_tested_with']})",
            "",
            f"A `{peft['model_class']}` with the adapter; greedy decoding as AutoPEFT decodes. {head}",
            "",
            "```python",
            "import torch",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "from peft import PeftModel",
            "",
            f"base = AutoModelForCausalLM.from_pretrained({base}){note}",
            f'model = PeftModel.from_pretrained(base, "path/to/this/folder/{peft["folder"]}").eval()',
            f"tokenizer = AutoTokenizer.from_pretrained({base})",
            *_generation_lines(peft, settings=True),
            "```",
        ]
    elif peft.get("written"):
        model_class = peft["model_class"]
        labels = f", num_labels={peft['num_labels']}" if peft.get("num_labels") else ""
        # A decoder's task model finds the last real token by the pad id, which a hub config may lack.
        labels += f", pad_token_id={peft['pad_token_id']}" if peft.get("pad_token_id") is not None else ""
        lines += [
            "",
            f"### peft (`{peft['folder']}/`, format tested with {peft['format_tested_with']})",
            "",
            "```python",
            f"from transformers import {model_class}",
            "from peft import PeftModel",
            "",
            f"base = {model_class}.from_pretrained({base}{labels}){note}",
            f'model = PeftModel.from_pretrained(base, "path/to/this/folder/{peft["folder"]}").eval()',
            "```",
        ]
    if adapters.get("written"):
        model_class = adapters["model_class"]
        lines += [
            "",
            f"### adapters (`{adapters['folder']}/`, format tested with {adapters['format_tested_with']})",
            "",
            "```python",
            f"from adapters import {model_class}",
            "",
            f"model = {model_class}.from_pretrained({base}){note}",
            f'model.load_adapter("path/to/this/folder/{adapters["folder"]}", set_active=True)  # adapter and head',
            "model.eval()",
            "```",
        ]
    merged = libraries.get("merged") or {}
    if merged.get("written"):
        generate = merged.get("auto_class") == "AutoModelForCausalLM"
        lines += [
            "",
            f"### transformers, merged weights (`{merged['folder']}/`, {merged['format_tested_with']})",
            "",
            *(
                [
                    "Its `generation_config.json` is AutoPEFT's decoding (greedy, the task's answer budget, EOS), "
                    "so `model.generate` needs only the prompt ids:",
                    "",
                ]
                if generate
                else []
            ),
            "```python",
            *(["import torch"] if generate else []),
            f"from transformers import {merged['auto_class']}, AutoTokenizer",
            "",
            f'model = {merged["auto_class"]}.from_pretrained("path/to/this/folder/{merged["folder"]}").eval()',
            f'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder/{merged["folder"]}")',
            *(_generation_lines(merged, settings=False) if generate else []),
            "```",
        ]
    for name, entry in libraries.items():
        if not entry.get("written"):
            lines += ["", f"No `{name}` folder: {name} cannot express {entry.get('reason')}."]
    data = manifest.get("data") or {}
    if generation:
        lines += [
            "",
            "Tokenise as training did: the tokenizer's own prefix (a BOS, if any), then the prompt without special "
            f"tokens; a prompt longer than {data.get('max_length')} tokens with its answer loses its beginning. "
            "To pick among candidate answers as `choice_accuracy` does, sum the log-probabilities of each "
            "candidate's tokens and EOS after the prompt. `load_export` does both itself.",
        ]
    else:
        lines += [
            "",
            f"Tokenise with the backbone's tokenizer as training did: truncation to {data.get('max_length')} tokens, "
            "a sentence pair as (text_a, text_b); `load_export` does this itself."
            + (
                " RoBERTa has one segment type: pass no `token_type_ids`."
                if backbone.get("model_type") == "roberta"
                else ""
            ),
        ]
    if not name_or_path and (peft.get("written") or adapters.get("written")):
        lines += [
            "",
            f"BACKBONE: this backbone's weights are not a `from_pretrained` id ({_backbone_line(backbone)}): "
            "build the task model from the backbone's config and copy in the encoder weights of "
            "`autopeft.training.backbones.load_backbone(manifest['backbone'])`, seeded with the manifest's `seed` "
            "for a random-weight backbone" + (" (its `.tokenizer` is the tokenizer to use)." if generation else "."),
        ]
    return lines


def model_card(manifest: Mapping[str, Any]) -> str:
    """The README.md text of the export whose manifest is ``manifest``."""
    task = manifest.get("task") or {}
    labels = manifest.get("label_names")
    task_kind = f"{task.get('type')}, {task.get('num_labels')} " + (
        "choices" if task.get("type") == "multiple_choice" else "labels" if task.get("type") != "regression" else ""
    )
    lines = [
        f"# {manifest.get('configuration')} · {task.get('name')}",
        "",
        f"An AutoPEFT export: a frozen backbone with parameter-efficient modules and a task head, "
        f"written {manifest.get('created')} by autopeft {(manifest.get('versions') or {}).get('autopeft')}.",
        "",
        f"- Backbone: {_backbone_line(manifest.get('backbone') or {})}",
        f"- Task: `{task.get('name')}` ({task_kind.strip()}" + (f": {', '.join(labels)})" if labels else ")"),
        f"- Configuration: {manifest.get('configuration')}",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(manifest.get("peft"), indent=2),
        "```",
        "",
        "## Parameters",
        "",
        *_params_section(manifest.get("params")),
        "",
        "## Scores",
        "",
        *_scores_section(manifest),
        "",
        "## How it was found",
        "",
        *_found_section(manifest.get("provenance")),
        "",
        "## Loading",
        "",
        *_loading_section(manifest),
        "",
    ]
    return "\n".join(lines)
