"""Retention of general ability after empathy tuning (EmPO checks MMLU): perplexity on a held-out
general text, and accuracy on a user-supplied multiple-choice CSV in MMLU format when given."""

from __future__ import annotations

import csv
import math
from pathlib import Path

CHOICES = ("A", "B", "C", "D")


def perplexity(model, tokenizer, text: str, *, window: int = 512, stride: int = 256) -> float:
    """Sliding-window perplexity (the transformers recipe): each token is predicted once, with up to
    `window` tokens of context."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids.to(model.device)
    n = ids.size(1)
    nll_sum, counted, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        target_len = end - prev_end
        chunk = ids[:, begin:end]
        labels = chunk.clone()
        labels[:, :-target_len] = -100
        with torch.inference_mode():
            loss = model(chunk, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        nll_sum += float(loss) * scored
        counted += scored
        prev_end = end
        if end == n:
            break
    return math.exp(nll_sum / max(counted, 1))


def read_mmlu_csv(path: str | Path) -> list[dict]:
    """MMLU's CSV files have no header: question, A, B, C, D, answer letter. A header row with
    those names is accepted too."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.reader(fh):
            if len(rec) < 6:
                continue
            if [c.strip().lower() for c in rec[:6]] == ["question", "a", "b", "c", "d", "answer"]:
                continue
            answer = rec[5].strip().upper()
            if answer not in CHOICES:
                raise ValueError(f"{path}: answer {rec[5]!r} is not one of {CHOICES}")
            rows.append({"question": rec[0], "choices": rec[1:5], "answer": answer})
    return rows


def mmlu_prompt(row: dict) -> str:
    options = "\n".join(f"{c}. {t}" for c, t in zip(CHOICES, row["choices"]))
    return f"{row['question']}\n{options}\nAnswer:"


def mmlu_accuracy(model, tokenizer, rows: list[dict]) -> float:
    """Zero-shot, as MMLU's reference harness: the choice whose letter (" A".." D") gets the highest
    next-token log-probability after the prompt."""
    import torch

    letter_ids = [tokenizer(f" {c}", add_special_tokens=False).input_ids[-1] for c in CHOICES]
    correct = 0
    for row in rows:
        ids = tokenizer(mmlu_prompt(row), return_tensors="pt").input_ids.to(model.device)
        with torch.inference_mode():
            logits = model(ids).logits[0, -1]
        pick = CHOICES[int(torch.argmax(logits[letter_ids]))]
        correct += pick == row["answer"]
    return correct / len(rows) if rows else float("nan")
