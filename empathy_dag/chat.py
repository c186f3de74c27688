"""Talk to a checkpoint in the terminal: `python -m empathy_dag chat --model dpo --emotion grief`.

`--model` is `base`, `sft`, `dpo`, `promoted` (folders of the model store under $DAGSTER_HOME), or a
path: a PEFT adapter folder (its base model is read from adapter_config.json, falling back to the
store's base model) or a full model folder / Hugging Face id. Reads one user turn per line from stdin,
so it can be scripted: `printf 'My scan was clear\n' | python -m empathy_dag chat --model dpo`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from empathy_dag.models import load_causal_lm

DEFAULT_SYSTEM_PROMPT = "You are a warm, empathetic listener. Reply in two or three sentences."
STORE_NAMES = {
    "base": "base_model",
    "sft": "sft_checkpoint",
    "dpo": "dpo_checkpoint",
    "promoted": "promoted_model",
}


@dataclass
class ChatSession:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    emotion_hint: str | None = None
    history: list[dict] = field(default_factory=list)

    def messages_for(self, user_text: str) -> list[dict]:
        system = self.system_prompt
        if self.emotion_hint:
            system += f" The person you are talking with feels {self.emotion_hint}."
        return [{"role": "system", "content": system}, *self.history, {"role": "user", "content": user_text}]

    def record(self, user_text: str, reply: str) -> None:
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]


def resolve_model(spec: str, store_root: Path) -> tuple[str, str | None]:
    """(base model source, adapter folder or None) for a --model argument."""
    if spec in STORE_NAMES:
        folder = store_root / STORE_NAMES[spec]
        pointer = folder / "pointer.json"
        if pointer.is_file():  # promoted_model points at the checkpoint it promoted
            folder = Path(json.loads(pointer.read_text())["path"])
        if not folder.exists():
            raise FileNotFoundError(
                f"{spec}: {folder} does not exist yet; materialize the `{STORE_NAMES[spec]}` asset first "
                "(make demo, or the Dagster UI)"
            )
        spec = str(folder)
    path = Path(spec)
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or not Path(base).exists():
            base = str(store_root / "base_model")
        return base, str(path)
    return spec, None


def run_chat(
    model_spec: str,
    store_root: Path,
    emotion: str | None,
    max_new_tokens: int,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    seed: int = 0,
) -> int:
    import torch

    base, adapter = resolve_model(model_spec, store_root)
    model, tokenizer = load_causal_lm(base, adapter=adapter)
    torch.manual_seed(seed)
    session = ChatSession(emotion_hint=emotion)
    interactive = stdin.isatty()
    print(
        f"[chat] model={base}" + (f" adapter={adapter}" if adapter else "") + " (empty line or Ctrl-D ends)",
        file=stdout,
        flush=True,
    )
    while True:
        if interactive:
            print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line or not line.strip():
            break
        user_text = line.strip()
        inputs = tokenizer.apply_chat_template(
            session.messages_for(user_text), add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        session.record(user_text, reply)
        print(f"bot> {reply}", file=stdout, flush=True)
    return 0
