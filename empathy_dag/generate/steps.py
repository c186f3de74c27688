"""Large generation runs as a heavy step through Dagster Pipes (`empathy_dag.pipes`): a subprocess here,
a task on the GPU task definition (`PipesECSClient`) in the aws profile. This module is the step's side;
the assets' side is `empathy_dag.defs.generate.pipes_generator.PipesBatchGenerator`.

`PipesBatchGenerator` stands in for `engine.Generator` in the generation assets (same `generate`,
`cache_id`, `source`, `last_stats`), so the SYNTHEMPATHY logic in `synthetic.py` does not know where the
model runs. It renders prompts with the tokenizer alone (no weights in the run's process) and looks them
up in the response cache; when at least `min_prompts` are left to generate, it writes them to the model
store, launches `generate_prompts` through Pipes, and reads the replies back. Fewer than that, it
generates in process (starting a task costs more than a handful of prompts).

The step loads the model (the store's `base_model` or a path/hub id), generates with the same settings,
batch seeds and cache keys as in process (so the replies are the same), writes replies.jsonl beside the
prompts and persists the folder."""

from __future__ import annotations

from pathlib import Path

from empathy_dag.generate.engine import (
    GenerationSettings,
    load_generator,
    log_progress,
)
from empathy_dag.pipes import (
    read_jsonl,
    step_cache_root,
    step_store,
    write_jsonl,
)

PROMPTS_FILE = "prompts.jsonl"
REPLIES_FILE = "replies.jsonl"
STEP = "empathy_dag.generate.steps:generate_prompts"


def generate_prompts(params: dict, pipes) -> dict:
    """The heavy step: replies to every prompt of `folder`/prompts.jsonl, written to replies.jsonl."""

    store = step_store(params)
    folder = store.fetch(params["folder"])
    source = str(store.fetch(params["store_model"])) if params.get("store_model") else params["source"]
    cache_dir = None
    if params.get("use_cache"):  # a step with its own disk keeps its own response cache there
        own = step_cache_root(params["store"])
        cache_dir = str(Path(own) / "generation_cache") if own else params["cache_dir"]
    generator = load_generator(
        source,
        adapter=params.get("adapter"),
        dtype=params["dtype"],
        device=params["device"],
        batch_size=params["batch_size"],
        cache_dir=cache_dir,
        allow_hub=params["allow_hub"],
        trust_remote_code=params["trust_remote_code"],
        threads=params.get("threads"),
    )
    settings = GenerationSettings(**{**params["settings"], "stop": tuple(params["settings"]["stop"])})
    prompts = read_jsonl(folder / PROMPTS_FILE)
    pipes.log.info(f"generating {len(prompts)} replies with {source} on {generator.device}")

    replies = generator.generate_prompts(prompts, settings, progress=log_progress(pipes.log))
    write_jsonl(folder / REPLIES_FILE, replies)
    where = store.persist(params["folder"])
    return {
        **generator.last_stats,
        "replies_at": where,
        "cache_id": generator.cache_id,
        "cache_path": str(generator.cache.path) if generator.cache is not None else "",
    }
