"""What a person reads about a checkpoint: the model card (README.md) and the loss curve."""

from __future__ import annotations

import json
from pathlib import Path


def loss_curve_png(log_history: list[dict], path: Path, title: str) -> Path:
    from empathy_dag.plots import figure_png, pyplot

    plt = pyplot()
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, marker="o", markersize=3, linewidth=1.5, label="training loss")
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if evals:
        steps, losses = zip(*evals)
        ax.plot(steps, losses, marker="s", markersize=4, linewidth=1.5, color="tab:green",
                label="eval loss (validation)")
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


def model_card(*, title: str, kind: str, base_model: dict, inputs: dict, hyperparameters: dict, result) -> str:
    losses = result.losses()
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {base_model['path']}",
        "tags: [empathy, lora, " + ("sft" if kind == "sft" else "dpo, empo") + ", trl]",
        "---",
        f"# {title}",
        "",
        ("LoRA adapter written by the `empathy_dag` pipeline. Load it with "
         "`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<base>), <this folder>)`."),
        "",
        "## Base model",
        f"- path: `{base_model['path']}`",
        f"- sha256 (safetensors): `{base_model['sha256']}`",
        "",
        "## Training data (versions of the inputs)",
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
    return "\n".join(lines)


def _interval(stats: dict) -> str:
    if stats.get("mean") is None:
        return f"n={stats.get('n', 0)}, no value"
    ci = f", 95% CI [{stats['ci_low']:.4f}, {stats['ci_high']:.4f}]" if stats.get("ci_low") is not None else ""
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
