"""Held-out measurements of a training run, per item, so that every mean comes with n and an interval.

SFT: the mean next-token loss on each validation dialogue's listener turn (the tokens SFT trains on),
before and after training, with the paired difference (bootstrap interval, Wilcoxon signed-rank test).
DPO: on validation pairs, the implicit rewards beta * (log pi(y|x) - log ref(y|x)) of chosen and rejected
replies after training, reference = the SFT policy (so before training every margin is 0 by construction):
reward accuracy (share of pairs with chosen reward > rejected reward, Wilson interval) and the mean margin
(bootstrap interval). trl's own eval loop reports batch means only; these are the per-item numbers."""

from __future__ import annotations

from collections.abc import Sequence

CONFIDENCE = 0.95


def mean_interval(values: Sequence[float], *, seed: int = 0, resamples: int = 2000) -> dict:
    """n, mean and a 95% percentile-bootstrap interval of the mean (scipy)."""
    import numpy as np
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    out = {"n": int(x.size), "mean": float(x.mean()) if x.size else None, "ci_low": None, "ci_high": None}
    if x.size >= 2 and np.ptp(x) > 0:
        res = bootstrap(
            (x,),
            np.mean,
            confidence_level=CONFIDENCE,
            n_resamples=resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        out["ci_low"], out["ci_high"] = (
            float(res.confidence_interval.low),
            float(res.confidence_interval.high),
        )
    elif x.size:
        out["ci_low"] = out["ci_high"] = float(x.mean())
    return out


def paired_change(before: Sequence[float], after: Sequence[float]) -> dict:
    """after - before per item: mean with a bootstrap interval, and the Wilcoxon signed-rank p-value."""
    import numpy as np
    from scipy.stats import wilcoxon

    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    out = mean_interval(diff)
    out["wilcoxon_p"] = float(wilcoxon(diff).pvalue) if diff.size >= 2 and np.any(diff != 0) else None
    out["items_improved"] = int((diff < 0).sum())
    return out


def proportion_interval(successes: int, n: int) -> dict:
    from scipy.stats import binomtest

    if n == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    ci = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return {"n": n, "mean": successes / n, "ci_low": float(ci.low), "ci_high": float(ci.high)}


def completion_losses(model, dataloader, device: str = "cpu") -> list[float]:
    """Mean token cross-entropy over each example's labelled tokens (labels != -100), in dataloader order.
    Examples with no labelled token left after truncation get NaN (left out of the statistics)."""
    import torch

    losses: list[float] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in dataloader:
            labels = batch["labels"].to(device)
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                use_cache=False,
            ).logits
            shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
            token_loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="none",
            ).view(shift_labels.shape)
            counted = (shift_labels != -100).sum(dim=1)
            per_item = token_loss.sum(dim=1) / counted.clamp(min=1)
            losses.extend(float("nan") if c == 0 else float(v) for v, c in zip(per_item.cpu(), counted.cpu()))
    model.train(was_training)
    return losses


def sft_heldout_summary(before: Sequence[float], after: Sequence[float]) -> dict:
    import math

    kept = [(b, a) for b, a in zip(before, after) if not (math.isnan(b) or math.isnan(a))]
    b, a = [p[0] for p in kept], [p[1] for p in kept]
    return {
        "eval_loss_before": mean_interval(b),
        "eval_loss_after": mean_interval(a),
        "eval_loss_change": paired_change(b, a),
        "n_eval_items": len(before),
        "n_eval_items_without_completion": len(before) - len(kept),
    }


def dpo_heldout_summary(
    policy_chosen: Sequence[float],
    policy_rejected: Sequence[float],
    ref_chosen: Sequence[float],
    ref_rejected: Sequence[float],
    beta: float,
) -> dict:
    import numpy as np

    chosen_reward = beta * (np.asarray(policy_chosen) - np.asarray(ref_chosen))
    rejected_reward = beta * (np.asarray(policy_rejected) - np.asarray(ref_rejected))
    margins = chosen_reward - rejected_reward
    n = int(margins.size)
    return {
        # Before training the policy is the reference: every margin is 0, no pair counts as preferred.
        "reward_accuracy_before": proportion_interval(0, n),
        "reward_margin_before": {
            "n": n,
            "mean": 0.0 if n else None,
            "ci_low": 0.0 if n else None,
            "ci_high": 0.0 if n else None,
        },
        "reward_accuracy_after": proportion_interval(int((margins > 0).sum()), n),
        "reward_margin_after": mean_interval(margins.tolist()),
        "n_eval_pairs": n,
    }
