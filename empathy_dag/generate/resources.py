"""Resources of this stage, merged into the local profile by `definitions.local_resources`."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from empathy_dag.generate.engine import GenerationSettings, Generator, load_generator
from empathy_dag.resources import ModelStore
from empathy_dag.settings import data_root


class TextGenerator(ConfigurableResource):
    """The chat LM that writes synthetic data: a local folder or a Hugging Face id (offline unless
    allow_hub), safetensors only, no remote code. Empty `source` means the `base_model` asset's folder
    in the model store. Replies are cached on disk under `cache_dir`, keyed by (weights sha256, rendered
    prompt, generation settings), so re-materializing generates only prompts it has not answered."""

    source: str = Field(default="", description="Model folder or hub id; empty = the base_model asset's folder.")
    adapter: str = Field(default="", description="Optional PEFT adapter folder applied on top of `source`.")
    dtype: str = Field(default="auto", description="auto (bfloat16 where the CPU or GPU computes in it "
                       "natively, else float32), float32, bfloat16 or float16.")
    device: str = Field(default="auto", description="cpu, cuda, mps or auto.")
    batch_size: int = Field(default=32, description="Prompts decoded together (sorted by length first).")
    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    do_sample: bool = True
    seed: int = 0
    stop: list[str] = Field(default_factory=list, description="Stop strings, cut from the reply.")
    cache_dir: str = Field(default_factory=lambda: str(data_root() / "generation_cache"))
    use_cache: bool = True
    threads: int = Field(default=0, description="CPU threads while generating; 0 = torch's default. "
                         "Set 1 on a machine shared with other jobs (OpenMP spin-waits otherwise).")
    allow_hub: bool = False
    trust_remote_code: bool = False
    heavy_step_min_prompts: int = Field(
        default=0, description="Generate in a Dagster Pipes step (a subprocess, or a GPU task on ECS in the "
        "aws profile) when a call has at least this many uncached prompts; 0 = always in process.")

    def settings(self, **overrides) -> GenerationSettings:
        values = {
            "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
            "do_sample": self.do_sample, "seed": self.seed, "stop": tuple(self.stop),
        }
        values.update(overrides)
        if isinstance(values.get("stop"), list):
            values["stop"] = tuple(values["stop"])
        return GenerationSettings(**values)

    def resolve_source(self, model_store: ModelStore) -> str:
        if self.source:
            return self.source
        # fetch = the local folder, made equal to the published one in the aws profile.
        folder = model_store.fetch("base_model")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no base model at {folder}: materialize the `base_model` asset first, or set the "
                "text_generator resource's `source`"
            )
        return str(folder)

    def for_asset(self, context, model_store: ModelStore, source: str | None = None):
        """What a generation asset generates with: the in-process Generator, or, with
        `heavy_step_min_prompts` set, a stand-in that sends large batches to a Pipes step."""
        if self.heavy_step_min_prompts <= 0:
            return self.load(model_store, source)
        from empathy_dag.generate.steps import PipesBatchGenerator

        resolved = source or self.resolve_source(model_store)
        from_store = not source and not self.source
        return PipesBatchGenerator(
            context, self, model_store, source=resolved, store_model="base_model" if from_store else None,
            min_prompts=self.heavy_step_min_prompts, load_local=lambda: self.load(model_store, resolved),
        )

    def load(self, model_store: ModelStore, source: str | None = None) -> Generator:
        """The generator for `source` (default: this resource's source / the base model). Loaded once
        per process and reused by every asset of the run."""
        return load_generator(
            source or self.resolve_source(model_store),
            adapter=self.adapter or None,
            dtype=self.dtype,
            device=self.device,
            batch_size=self.batch_size,
            cache_dir=self.cache_dir if self.use_cache else None,
            allow_hub=self.allow_hub,
            trust_remote_code=self.trust_remote_code,
            threads=self.threads or None,
        )


def stage_resources(root: Path) -> dict:
    """Resource key -> resource instance, with every location under `root` (the data root).

    Generation runs in process unless EMPATHY_DAG_OPENAI_BASE_URL names an OpenAI-compatible server
    (vLLM, llama.cpp, a hosted API): then the same assets generate through it, with the same cache."""
    cache_dir = str(Path(root) / "generation_cache")
    # Imported here: openai_backend builds on TextGenerator from this module.
    from empathy_dag.generate.openai_backend import ServerTextGenerator, openai_backend_from_env

    server = openai_backend_from_env(cache_dir=cache_dir)
    if server is not None:
        return {"text_generator": ServerTextGenerator(server=server, cache_dir=cache_dir)}
    return {"text_generator": TextGenerator(cache_dir=cache_dir)}
