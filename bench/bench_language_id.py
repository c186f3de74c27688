"""The language identifier on real text (issue 24 item 1): agreement with the current detector (lingua, the
seven languages of ingest/language.py, high accuracy, one `compute_language_confidence_values` call per
text) and time per text, for the ways to make it cheaper that keep lingua:

- batch: `identify_languages` (each distinct text once, lingua's multi-threaded batch call) - what ingest
  uses now;
- low_accuracy: the same languages with `with_low_accuracy_mode()` (trigrams only);
- prefix_120: the current detector on the first 120 characters (cut at a space).

Texts: GoEmotions comments, EmpatheticDialogues situation + speaker turn (what ingest identifies), the
shipped seeds (English and Japanese). Arms interleaved per repeat in one process; n repeats.

    PYTHONPATH=. python bench/bench_language_id.py --texts 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _hardware import cpu_info
from _stats import t_interval
from bench_scale import DATA

from empathy_dag.ingest.language import (
    CONFUSER_LANGUAGES,
    SUPPORTED_LANGUAGES,
    _detector,
    _guess,
    identify_language,
    identify_languages,
)
from empathy_dag.settings import assets_dir


def corpora(n: int) -> dict[str, list[str]]:
    goemotions = [line.split("\t")[0] for line in (DATA / "goemotions" / "train.tsv").open(encoding="utf-8")][
        :n
    ]
    ed = []
    with open(
        DATA / "empathetic_dialogues" / "utterance_pairs_valid.csv", encoding="utf-8", newline=""
    ) as fh:
        for row in csv.DictReader(fh):
            ed.append(f"{row['prompt']} {row['sp1']}".replace("_comma_", ","))
    seeds: dict[str, list[str]] = {"en": [], "ja": []}
    for path in sorted((assets_dir() / "seed").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            seeds["ja" if "_ja_" in path.name else "en"].append(
                f"{row['situation']} {row.get('speaker_utterance') or ''}"
            )
    return {
        "goemotions": list(dict.fromkeys(goemotions)),
        "ed_situation_speaker": list(dict.fromkeys(ed))[:n],
        "seed_en": seeds["en"],
        "seed_ja": seeds["ja"],
    }


def _low_accuracy():
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    codes = (*SUPPORTED_LANGUAGES, *CONFUSER_LANGUAGES)
    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in codes]
    return LanguageDetectorBuilder.from_languages(*langs).with_low_accuracy_mode().build()


def _prefix(text: str, n: int = 120) -> str:
    if len(text) <= n:
        return text
    cut = text.rfind(" ", 0, n + 1)
    return text[:cut] if cut > n // 2 else text[:n]


def _batch(texts: list[str]) -> list:
    guesses = identify_languages(texts)
    return [guesses[t] for t in texts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    before = cpu_info()
    low = _low_accuracy()
    arms = {
        "current": lambda texts: [identify_language(t) for t in texts],
        "batch": _batch,
        "low_accuracy": lambda texts: [_guess(low.compute_language_confidence_values(t)) for t in texts],
        "prefix_120": lambda texts: [identify_language(_prefix(t)) for t in texts],
    }
    data = corpora(args.texts)
    for texts in data.values():  # load every model once
        arms["current"](texts[:5])
        arms["low_accuracy"](texts[:5])
    _detector()
    report: dict = {"texts": {k: len(v) for k, v in data.items()}, "repeats": args.repeats, "corpora": {}}
    for name, texts in data.items():
        seconds: dict[str, list[float]] = {arm: [] for arm in arms}
        results: dict[str, list] = {}
        for i in range(args.repeats):
            order = list(arms)[i % len(arms) :] + list(arms)[: i % len(arms)]
            for arm in order:
                start = time.perf_counter()
                results[arm] = arms[arm](texts)
                seconds[arm].append(time.perf_counter() - start)
        ref = results["current"]
        row = {}
        for arm in arms:
            same = sum(a.language == b.language for a, b in zip(ref, results[arm], strict=True))
            ratios = [c / s for c, s in zip(seconds["current"], seconds[arm], strict=True)]
            row[arm] = {
                "agree": same,
                "n": len(texts),
                "agree_pct": round(100 * same / len(texts), 2),
                "max_confidence_diff": round(
                    max(abs(a.confidence - b.confidence) for a, b in zip(ref, results[arm], strict=True)), 4
                ),
                "us_per_text_median": round(1e6 * statistics.median(seconds[arm]) / len(texts), 1),
                "speedup_vs_current": {
                    "mean": round(statistics.mean(ratios), 2),
                    "t95": [round(x, 2) for x in t_interval(ratios)],
                },
                "disagreements": [
                    (t[:80], a.language, b.language)
                    for t, a, b in zip(texts, ref, results[arm], strict=True)
                    if a.language != b.language
                ][:5],
            }
        report["corpora"][name] = row
        print(
            name,
            json.dumps({a: {k: v for k, v in r.items() if k != "disagreements"} for a, r in row.items()}),
            flush=True,
        )
    report["hardware_before"], report["hardware_after"] = before, cpu_info()
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
