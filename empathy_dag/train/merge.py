"""Models users can share: a LoRA adapter merged into its base model as one full-weights folder
(safetensors, tokenizer with its chat template, a `ModelCard`) that `AutoModelForCausalLM.from_pretrained`
and vLLM load without peft, and an opt-in upload of that folder to the Hugging Face hub.

No Dagster here: the `merged_model` asset runs `train.steps.merge_checkpoint` (a heavy step) which calls
`export_merged`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from empathy_dag.models import folder_written_aside, hub_offline_by_default, sha256_tree, torch_dtype
from empathy_dag.train.card import (
    DEFAULT_DATASETS,
    card_data,
    hub_base_model,
    leaderboard_eval_results,
    render_card,
)

MERGE_INFO_FILE = "merge.json"


def saved_dtype(model_dir: Path) -> str:
    """The dtype a model folder was saved in (config.json), so merging keeps it: no float32 up-cast
    of a bf16 model (twice the bytes) unless asked."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, *, dtype: str = "auto") -> dict:
    """Load base + adapter, `merge_and_unload`, and write a plain transformers folder (safetensors,
    tokenizer, chat template), through a temp folder renamed when complete. `dtype` "auto" = the base
    model's saved dtype."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub_offline_by_default()
    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} has no PEFT adapter (adapter_config.json): train it first")
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"{base_dir} has no model (config.json): materialize base_model first")
    dtype = saved_dtype(base_dir) if dtype == "auto" else dtype
    model = AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=torch_dtype(dtype), use_safetensors=True
    )
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    # The adapter folder's tokenizer is the one training saw (trl may set its pad token); else the base's.
    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if tokenizer.chat_template is None:
        tokenizer.chat_template = AutoTokenizer.from_pretrained(str(base_dir)).chat_template
    if tokenizer.chat_template is None:
        raise ValueError(
            f"neither {tok_dir} nor {base_dir} has a chat template: a merged chat model needs one"
        )
    with folder_written_aside(Path(out_dir)) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {
            "base_sha256": sha256_tree(base_dir),
            "adapter_sha256": sha256_tree(adapter_dir),
            "dtype": dtype,
            "parameters": sum(p.numel() for p in merged.parameters()),
        }
        (tmp / MERGE_INFO_FILE).write_text(json.dumps(info, indent=1))
    return {**info, "path": str(out_dir), "sha256": sha256_tree(Path(out_dir))}


def adapter_card_data(adapter_dir: Path) -> dict:
    """What the adapter's own card recorded (licence, datasets, language, data fingerprint), carried
    over to the merged model's card; empty when the adapter has no parseable card."""
    import yaml
    from huggingface_hub import ModelCard

    readme = Path(adapter_dir) / "README.md"
    if not readme.is_file():
        return {}
    try:  # (a card without a YAML header, written before cards had one, parses as empty data)
        return ModelCard.load(readme).data.to_dict()
    except (yaml.YAMLError, ValueError):  # a header a person broke: the merged card still gets written
        return {}


def merged_card(
    *, title: str, base_dir: Path, adapter_dir: Path, merge_info: dict, leaderboard_rows: list[dict]
) -> str:
    """The merged model's README.md: `ModelCardData` with the hub base model, the adapter card's
    licence / datasets / language / data fingerprint, and the leaderboard metrics (mean, n, 95% interval)
    of the evaluated system whose weights this adapter is."""
    adapter = adapter_card_data(adapter_dir)
    base = hub_base_model(base_dir)
    datasets = adapter.get("datasets") or DEFAULT_DATASETS
    fingerprint = adapter.get("training_data_fingerprint")
    data = card_data(
        model_name=title,
        kind="dpo" if "dpo" in (adapter.get("tags") or []) else "sft",
        base_dir=base_dir,
        library_name="transformers",
        eval_results=leaderboard_eval_results(leaderboard_rows, datasets[0]),
        languages=adapter.get("language"),
        datasets=datasets,
        license=adapter.get("license"),
        fingerprint=fingerprint,
    )
    metric_lines = [
        f"| {r['metric']} | {r['value']:.4g} | {r.get('n')} | "
        + (f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]" if r.get("ci_low") is not None else "")
        + f" | {r.get('verdict') or ''} |"
        for r in leaderboard_rows
        if r.get("value") is not None
    ]
    body = [
        f"# {title}",
        "",
        "Full weights: the `empathy_dag` LoRA adapter merged into its base model (`merge_and_unload`). Loads",
        "without peft:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
        'tokenizer = AutoTokenizer.from_pretrained("<this folder>")  # chat template included',
        "```",
        "",
        "## Base model",
        f"- hub id: `{base['id']}`" if base["id"] else "- hub id: none (a local model)",
        f"- origin: {base['note']}",
        f"- base sha256 (safetensors): `{merge_info['base_sha256']}`",
        f"- adapter sha256: `{merge_info['adapter_sha256']}`",
        f"- merged weights: {merge_info['dtype']}, {merge_info['parameters']:,} parameters",
        f"- training data fingerprint: `{fingerprint}`"
        if fingerprint
        else "- training data fingerprint: unknown",
        "",
        "## Leaderboard (test split, all emotions)",
        *(
            ["", "| metric | mean | n | 95% interval | vs baseline |", "|---|---|---|---|---|", *metric_lines]
            if metric_lines
            else ["", "Not evaluated yet: no leaderboard row has this adapter's sha256."]
        ),
        "",
    ]
    return render_card(data, "\n".join(body))


def push_folder_to_hub(folder: Path, repo_id: str, *, private: bool = True) -> str:
    """Upload a folder as a hub model repository (created when missing). Needs a token (HF_TOKEN or
    `hf auth login`) and the hub reachable: this project runs offline by default, so say so clearly."""
    from huggingface_hub import HfApi
    from huggingface_hub.constants import is_offline_mode

    if not repo_id or repo_id.count("/") != 1:
        raise ValueError(f"push_to_hub needs repo_id as 'owner/name', got {repo_id!r}")
    if is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise RuntimeError(
            "push_to_hub with the hub offline (HF_HUB_OFFLINE=1, this project's default): "
            "run with HF_HUB_OFFLINE=0 to upload"
        )
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="empathy_dag merged model"
    )
    return str(getattr(commit, "commit_url", commit))


def export_merged(
    base_dir: Path,
    adapter_dir: Path,
    out_dir: Path,
    *,
    title: str,
    leaderboard_rows: list[dict] = (),
    dtype: str = "auto",
    push_to_hub: bool = False,
    repo_id: str = "",
    private: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Merge, write the card, and upload only when `push_to_hub` is set (off by default)."""
    info = merge_adapter(base_dir, adapter_dir, out_dir, dtype=dtype)
    card = merged_card(
        title=title,
        base_dir=Path(base_dir),
        adapter_dir=Path(adapter_dir),
        merge_info=info,
        leaderboard_rows=list(leaderboard_rows),
    )
    (Path(out_dir) / "README.md").write_text(card, encoding="utf-8")
    log(
        f"merged {adapter_dir} into {base_dir}: {info['parameters']:,} parameters ({info['dtype']}) in {out_dir}"
    )
    info["pushed_to"] = ""
    if push_to_hub:
        info["pushed_to"] = push_folder_to_hub(Path(out_dir), repo_id, private=private)
        log(f"pushed {out_dir} to the hub: {info['pushed_to']}")
    return info
