"""The chat command, driven through stdin as a user would script it."""

import subprocess
import sys

import pytest

from empathy_dag.chat import ChatSession, resolve_model


def test_chat_session_keeps_history_and_emotion_hint():
    s = ChatSession(emotion_hint="grief")
    first = s.messages_for("My father died last week.")
    assert first[0]["role"] == "system" and "grief" in first[0]["content"]
    s.record("My father died last week.", "I'm so sorry.")
    second = s.messages_for("I keep reaching for the phone.")
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]


def test_resolve_model_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the `dpo_checkpoint` asset"):
        resolve_model("dpo", tmp_path)


def test_chat_command_through_stdin(base_model_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "empathy_dag",
            "chat",
            "--model",
            str(base_model_dir),
            "--emotion",
            "relief",
            "--max-new-tokens",
            "12",
        ],
        input="My scan came back clear today.\nI can finally sleep.\n\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    replies = [line for line in proc.stdout.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 2
    assert all(len(r) > len("bot> ") for r in replies)
