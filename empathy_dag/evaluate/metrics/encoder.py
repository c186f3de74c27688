"""A small sentence encoder (mean-pooled, L2-normalized token states, as sentence-transformers
does for all-MiniLM-L6-v2) with an in-memory cache: Epitome's seeker posts repeat across the three
mechanisms, so each distinct text is encoded once per process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from empathy_dag.models import hub_offline_by_default, resolve_encoder


class SentenceEncoder:
    def __init__(
        self, model: str = "embedded:minilm", max_length: int = 128, batch_size: int = 64, device: str = "cpu"
    ):
        from transformers import AutoModel, AutoTokenizer

        hub_offline_by_default()
        self.spec, self.path = model, resolve_encoder(model)
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        keys = [hashlib.sha1((t or "").encode()).hexdigest() for t in texts]
        todo = sorted(
            {k: t or "" for k, t in zip(keys, texts) if k not in self._cache}.items(),
            key=lambda kv: len(kv[1]),
        )  # similar lengths per batch: less padding
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            batch = self.tokenizer(
                [t for _, t in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            for (k, _), vec in zip(chunk, pooled):
                self._cache[k] = vec
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys]).astype(np.float32)
