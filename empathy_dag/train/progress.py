"""Training progress where users look: one line per trainer logging step, sent to any `log(str)` function.

The Pipes heavy step passes `pipes.log.info`, so each line becomes a Dagster log event of the run (through
the Pipes messages, also from an ECS task); a direct caller passes `print` or `logging.info`. The trainer's
own tqdm bar and stdout stay off: in a Dagster run they end up only in the raw compute logs."""

from __future__ import annotations

import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(
    kind: str,
    logs: dict,
    *,
    step: int,
    max_steps: int,
    elapsed: float,
    steps_done: int,
    tokens_done: float | None,
) -> str:
    """`sft step 8/24 (33%) | loss 2.913 | lr 4.2e-04 | eval_loss 2.871 | 1,030 tok/s | ETA 1m40s`.

    `steps_done` / `elapsed` / `tokens_done` count this process only (a resumed run does not claim the
    speed of the steps before its restart); the ETA assumes the remaining steps go at the same rate."""
    parts = [
        f"{kind} step {step}/{max_steps}" + (f" ({100 * step / max_steps:.0f}%)" if max_steps > 0 else "")
    ]
    for key, label, fmt in (
        ("loss", "loss", "{:.4f}"),
        ("learning_rate", "lr", "{:.2e}"),
        ("grad_norm", "grad_norm", "{:.3f}"),
        ("eval_loss", "eval_loss", "{:.4f}"),
        ("rewards/accuracies", "reward_acc", "{:.3f}"),
        ("rewards/margins", "reward_margin", "{:.4f}"),
        ("eval_rewards/accuracies", "eval_reward_acc", "{:.3f}"),
        ("eval_rewards/margins", "eval_reward_margin", "{:.4f}"),
    ):
        if isinstance(logs.get(key), (int, float)):
            parts.append(f"{label} {fmt.format(logs[key])}")
    if elapsed > 0 and tokens_done:
        parts.append(f"{tokens_done / elapsed:,.0f} tok/s")
    if elapsed > 0 and steps_done > 0 and max_steps > 0:
        parts.append(f"ETA {format_duration((max_steps - step) * elapsed / steps_done)}")
    return " | ".join(parts)


def progress_callback(log: Callable[[str], None], kind: str):
    """A `transformers.TrainerCallback` that writes `progress_line` at every logging step and evaluation.
    Token counts come from the trainer's `num_input_tokens_seen` (`include_num_input_tokens_seen`)."""
    from transformers import TrainerCallback

    class ProgressToLog(TrainerCallback):
        def __init__(self):
            self.start = None
            self.first_step = 0
            self.first_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()
            self.first_step = state.global_step  # > 0 when resuming from a checkpoint
            self.first_tokens = state.num_input_tokens_seen or 0
            resumed = f", resuming at step {state.global_step}" if state.global_step else ""
            log(f"{kind} training starts: {state.max_steps} steps{resumed}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or self.start is None or not any(k in logs for k in ("loss", "eval_loss")):
                return  # the end-of-training summary has its own line
            tokens = (state.num_input_tokens_seen or 0) - self.first_tokens
            log(
                progress_line(
                    kind,
                    logs,
                    step=state.global_step,
                    max_steps=state.max_steps,
                    elapsed=time.perf_counter() - self.start,
                    steps_done=state.global_step - self.first_step,
                    tokens_done=tokens or None,
                )
            )

    return ProgressToLog()
