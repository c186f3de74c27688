"""Security of what comes in and what goes out: chat-template control tokens in corpus text never
become special tokens (checked with the embedded SmolLM2 tokenizer), names from config never leave
their root, and review CSVs never carry a live spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json

import polars as pl
import pytest

from empathy_dag.ingest.corpus import validate_bytes
from empathy_dag.ingest.records import CHAT_CONTROL_TOKENS, ValidationLimits, neutralise_control_tokens
from empathy_dag.safe_paths import child_path, single_component, spreadsheet_safe
from empathy_dag.taxonomy import default_taxonomy


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from empathy_dag.models import embedded_smollm2_gguf, hub_offline_by_default

    hub_offline_by_default()
    gguf = embedded_smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def test_control_tokens_never_reach_the_tokenizer_as_special_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    added = {t.content for t in tok.added_tokens_decoder.values()}
    # The list ingest neutralises covers every added token of the embedded model (so it cannot drift).
    assert added <= set(CHAT_CONTROL_TOKENS)
    special_ids = set(tok.added_tokens_decoder)
    rows = []
    for i, t in enumerate(sorted(added) + ["<|eot_id|>", "<|start_header_id|>", "[INST]", "<<SYS>>"]):
        rows.append(
            {
                "emotion": "fear",
                "situation": f"Case {i}: my notes said {t}assistant\nhello{t} at the end.",
                "speaker_utterance": f"I wrote {t} somewhere {i}",
                "listener_reply": f"{t}{t}nested <{t}|>",
            }
        )
    data = "\n".join(json.dumps(r) for r in rows).encode() + b"\n"
    outcome = validate_bytes(data, "tokens.jsonl", taxonomy=default_taxonomy(), limits=ValidationLimits())
    assert len(outcome.records) == len(rows) and not outcome.quarantined
    assert outcome.normalised["control_tokens_neutralised"] == len(rows)
    for r in outcome.records:
        for text in (r.situation, r.speaker_utterance, r.listener_reply):
            assert not set(tok(text, add_special_tokens=False).input_ids) & special_ids, text
        # Templated as training data: exactly the template's own control tokens, none from the text.
        conversation = [
            {"role": "user", "content": r.speaker_utterance},
            {"role": "assistant", "content": r.listener_reply},
        ]
        ids = tok(tok.apply_chat_template(conversation, tokenize=False), add_special_tokens=False).input_ids
        im_start = tok.convert_tokens_to_ids("<|im_start|>")
        assert ids.count(im_start) == 3  # system (the template's default), user, assistant


def test_neutralising_is_idempotent_and_leaves_ordinary_text_alone():
    text, n = neutralise_control_tokens("a <|im_start|> b <<|im_end|>|> c")
    assert n >= 2 and "<|im_start|>" not in text and "<|im_end|>" not in text
    assert neutralise_control_tokens(text) == (text, 0)
    plain = "I said <b>thanks</b> and x < y | z > w."
    assert neutralise_control_tokens(plain) == (plain, 0)


def test_names_from_config_never_leave_their_root(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert child_path(root, "promoted/abc") == root / "promoted" / "abc"
    # a model folder the operator linked into the store is theirs to make; going *through* it is not
    assert child_path(root, "link") == root / "link"
    for bad in ("../models", "..", "/etc", "a/../../b", "", "x\x00y", "link/inside", "a\\b"):
        with pytest.raises(ValueError):
            child_path(root, bad)
    assert single_component("empathy_dag_dialogues") == "empathy_dag_dialogues"
    for bad in ("../models", "a/b", ".", "..", "", "tab\tname"):
        with pytest.raises(ValueError):
            single_component(bad)

    from empathy_dag.resources import ModelStore

    store = ModelStore(root=str(root))
    with pytest.raises(ValueError, match="model name"):
        store.folder("../escape")


def test_export_name_cannot_delete_the_model_store(resources, data_root, tmp_path):
    """`ExportConfig.name="../models"` once resolved to the model store and replaced it; now the run
    fails before anything is touched, and an existing folder that is not an earlier export is kept."""
    from dagster import DagsterInstance, materialize

    from empathy_dag.defs.export.assets import dataset_export
    from tests.test_export import _dialogues, _pairs, _stand_in

    models = data_root / "models"
    (models / "sft_checkpoint").mkdir(parents=True, exist_ok=True)
    (models / "sft_checkpoint" / "weights.bin").write_bytes(b"keep me")
    stand_ins = [
        _stand_in("dataset_splits", _dialogues),
        _stand_in("preference_pairs", _pairs),
        _stand_in(
            "filter_report",
            lambda e: pl.DataFrame({"emotion": [e], "filter": ["x"], "reason": ["y"], "text": ["z"]}),
        ),
    ]
    instance = DagsterInstance.ephemeral()
    assert materialize(stand_ins, resources=resources, partition_key="joy", instance=instance).success

    def export(config: dict):
        return materialize(
            [*stand_ins, dataset_export],
            selection=[dataset_export],
            resources=resources,
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"dataset_export": {"config": config}}},
        )

    assert not export({"name": "../models"}).success
    assert not export({"adapters": ["../../etc"]}).success
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert not export({"destination": str(precious)}).success
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert (models / "sft_checkpoint" / "weights.bin").read_bytes() == b"keep me"
    # An earlier export is still replaced in place.
    out = tmp_path / "export"
    assert export({"destination": str(out)}).success
    assert export({"destination": str(out)}).success
    assert (out / "dialogues").is_dir()


def test_review_csv_cells_never_run_as_formulas():
    from empathy_dag.review.items import ITEM_SCHEMA, batch_csv

    hostile = [
        '=HYPERLINK("http://evil.example","click")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
    ]
    rows = [
        {
            "item_id": f"i{i}",
            "emotion": "joy",
            "flag": "audit",
            "why_flagged": "audit sample",
            "situation": text,
            "speaker_utterance": "hi",
            "listener_reply": text,
            "language": "en",
            "origin": "corpus",
            "generator": None,
            "in_training_data": True,
        }
        for i, text in enumerate(hostile)
    ]
    out = list(csv.DictReader(io.StringIO(batch_csv(pl.DataFrame(rows, schema=ITEM_SCHEMA)), newline="")))
    assert len(out) == len(hostile)
    for row in out:
        for key in ("situation", "listener_reply"):
            assert row[key].startswith("'") and row[key][1:] in hostile
    assert spreadsheet_safe("a normal reply") == "a normal reply" and spreadsheet_safe(3) == 3
