"""Resources of this stage, merged into the local profile by `profiles.local_resources`."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from empathy_dag.defs.generate.pipes_generator import PipesBatchGenerator
from empathy_dag.generate.engine import GenerationSettings, Generator, ResponseCache, load_generator
from empathy_dag.generate.openai_backend import OpenAICompatibleGenerator, load_key_tokenizer
from empathy_dag.generate.sharded import ShardedGenerator
from empathy_dag.resources import ModelStore
from empathy_dag.settings import data_root


class TextGenerator(ConfigurableResource):
    """The chat LM that writes synthetic data: a local folder or a Hugging Face id (offline unless
    allow_hub), safetensors only, no remote code. Empty `source` means the `base_model` asset's folder
    in the model store. Replies are cached on disk under `cache_dir`, keyed by (weights sha256, rendered
    prompt, generation settings), so re-materializing generates only prompts it has not answered."""

    source: str = Field(
        default="", description="Model folder or hub id; empty = the base_model asset's folder."
    )
    adapter: str = Field(default="", description="Optional PEFT adapter folder applied on top of `source`.")
    dtype: str = Field(
        default="auto",
        description="auto (bfloat16 where the CPU or GPU computes in it "
        "natively, else float32), float32, bfloat16 or float16.",
    )
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
    threads: int = Field(
        default=0,
        description="CPU threads while generating; 0 = torch's default. "
        "Set 1 on a machine shared with other jobs (OpenMP spin-waits otherwise).",
    )
    allow_hub: bool = False
    trust_remote_code: bool = False
    heavy_step_min_prompts: int = Field(
        default=0,
        description="Generate in a Dagster Pipes step (a subprocess, or a GPU task on ECS in the "
        "aws profile) when a call has at least this many uncached prompts; 0 = always in process.",
    )

    def settings(self, **overrides) -> GenerationSettings:
        values = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "do_sample": self.do_sample,
            "seed": self.seed,
            "stop": tuple(self.stop),
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

        resolved = source or self.resolve_source(model_store)
        from_store = not source and not self.source
        return PipesBatchGenerator(
            context,
            self,
            model_store,
            source=resolved,
            store_model="base_model" if from_store else None,
            min_prompts=self.heavy_step_min_prompts,
            load_local=lambda: self.load(model_store, resolved),
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


class OpenAICompatibleBackend(ConfigurableResource):
    """Generation on an OpenAI-compatible server: vLLM, llama.cpp (`llama-server`,
    `python -m llama_cpp.server`), or a hosted API. Same `get_generator().generate(...)` interface and
    the same response cache as the in-process engine; set `cache_id` (and `tokenizer`) to what the
    in-process engine uses for the same weights to share cached replies across backends."""

    base_url: str = Field(
        default="http://127.0.0.1:8000/v1", description="The server's OpenAI root, usually ending in /v1."
    )
    model: str = Field(
        default="smollm2",
        description="The model name the server serves "
        "(vLLM --served-model-name, llama_cpp.server --model_alias).",
    )
    api_key: str | None = Field(
        default=None,
        description="Bearer token; pass EnvVar('OPENAI_API_KEY') "
        "(or your variable), never the key itself. Local servers need none.",
    )
    cache_id: str = Field(
        default="",
        description="Identifies the weights in the cache key: the in-process "
        "engine's id (engine.model_cache_id(folder)) to share replies with it, or e.g. "
        "'<model>@<revision>'. Empty: 'server:<model>'.",
    )
    tokenizer: str | None = Field(
        default=None,
        description="A local folder with the model's tokenizer "
        "(e.g. the base_model folder): prompts are then keyed exactly like the "
        "in-process engine keys them. None: keyed by the messages' JSON.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Response cache folder (shared with the "
        "in-process engine when the same); None disables the cache.",
    )
    max_in_flight: int = Field(default=4, ge=1, description="Concurrent requests.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request read timeout.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(
        default=5,
        ge=0,
        description="The openai client's retries of one request (429, "
        "5xx, timeouts, dropped connections; exponential backoff, Retry-After honoured), "
        "and how often a reply that is not one (bad JSON, no choices) is asked again "
        "before it is recorded as that prompt's error.",
    )
    send_seed: bool = Field(
        default=True,
        description="Send a per-request `seed` (vLLM, llama.cpp and "
        "OpenAI honour it); turn off for servers that reject the field.",
    )
    check_model: bool = Field(
        default=True,
        description="GET /models before the first request and fail early when the model is not served.",
    )
    more_base_urls: list[str] = Field(
        default_factory=list,
        description="Further servers of the same "
        "weights (one per GPU or worker): work is split across all of them by "
        "chunk (generate/sharded.py), a failed one hands its chunk to the others.",
    )
    chunk_size: int = Field(
        default=64, ge=1, description="Prompts per chunk when several servers share the work."
    )

    def get_generator(self, model: str | None = None, cache_id: str | None = None):
        """A generator for `model` (default: the configured one; e.g. a LoRA adapter vLLM serves under
        its own name via --lora-modules) with its own `cache_id`: an `OpenAICompatibleGenerator`, or a
        `ShardedGenerator` over every server when `more_base_urls` lists others."""
        urls = [self.base_url, *[u for u in self.more_base_urls if u and u != self.base_url]]
        generators = [self._one_generator(url, model, cache_id) for url in urls]
        if len(generators) == 1:
            return generators[0]
        return ShardedGenerator(generators, chunk_size=self.chunk_size)

    def _one_generator(
        self, base_url: str, model: str | None, cache_id: str | None
    ) -> OpenAICompatibleGenerator:
        model = model or self.model
        cid = cache_id or self.cache_id or f"server:{model}"
        return OpenAICompatibleGenerator(
            base_url=base_url,
            model=model,
            cache_id=cid,
            api_key=self.api_key or None,
            max_in_flight=self.max_in_flight,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            max_retries=self.max_retries,
            send_seed=self.send_seed,
            check_model=self.check_model,
            tokenizer=load_key_tokenizer(self.tokenizer) if self.tokenizer else None,
            cache=ResponseCache(self.cache_dir) if self.cache_dir else None,
        )


def openai_backend_from_env(cache_dir: str | None = None) -> OpenAICompatibleBackend | None:
    """The backend a profile asks for through the environment, or None when
    EMPATHY_DAG_OPENAI_BASE_URL is unset (then the in-process engine is used):

    EMPATHY_DAG_OPENAI_BASE_URL   e.g. http://127.0.0.1:8000/v1
    EMPATHY_DAG_OPENAI_MORE_BASE_URLS  comma-separated further servers of the same weights (work is
                                  split across all of them by chunk: generate/sharded.py)
    EMPATHY_DAG_OPENAI_CHUNK_SIZE prompts per chunk when sharded (default 64)
    EMPATHY_DAG_OPENAI_MODEL      the served model name (default smollm2)
    EMPATHY_DAG_OPENAI_KEY_VAR    the name of the variable holding the API key (default OPENAI_API_KEY;
                                  read through EnvVar, so the key never lands in run config)
    EMPATHY_DAG_OPENAI_CACHE_ID   cache id of the served weights (see OpenAICompatibleBackend.cache_id)
    EMPATHY_DAG_OPENAI_TOKENIZER  local tokenizer folder for engine-compatible cache keys
    EMPATHY_DAG_OPENAI_IN_FLIGHT  concurrent requests (default 4)
    EMPATHY_DAG_OPENAI_TIMEOUT_S  per-request timeout (default 120)
    """
    env = os.environ
    base_url = env.get("EMPATHY_DAG_OPENAI_BASE_URL")
    if not base_url:
        return None
    key_var = env.get("EMPATHY_DAG_OPENAI_KEY_VAR", "OPENAI_API_KEY")
    return OpenAICompatibleBackend(
        base_url=base_url,
        model=env.get("EMPATHY_DAG_OPENAI_MODEL", "smollm2"),
        api_key=EnvVar(key_var) if key_var in env else None,
        cache_id=env.get("EMPATHY_DAG_OPENAI_CACHE_ID", ""),
        tokenizer=env.get("EMPATHY_DAG_OPENAI_TOKENIZER") or None,
        cache_dir=cache_dir,
        max_in_flight=int(env.get("EMPATHY_DAG_OPENAI_IN_FLIGHT", "4")),
        timeout_s=float(env.get("EMPATHY_DAG_OPENAI_TIMEOUT_S", "120")),
        more_base_urls=[
            u.strip() for u in env.get("EMPATHY_DAG_OPENAI_MORE_BASE_URLS", "").split(",") if u.strip()
        ],
        chunk_size=int(env.get("EMPATHY_DAG_OPENAI_CHUNK_SIZE", "64")),
    )


class ServerTextGenerator(TextGenerator):
    """The `text_generator` resource, generating on a server: a drop-in for `TextGenerator` (same
    settings, same cache folder, same `load()`), so the synthetic-data assets run unchanged. Its own
    model is served by `server`; other sources (e.g. `extra_generators` folders) still load in-process."""

    server: OpenAICompatibleBackend

    def resolve_source(self, model_store) -> str:
        return f"{self.server.base_url.rstrip('/')}#{self.server.model}"

    def for_asset(self, context, model_store, source: str | None = None):
        # The server already runs the model elsewhere: no Pipes step for its own replies.
        if not source or source == self.resolve_source(model_store):
            return self.load(model_store, source)
        return super().for_asset(context, model_store, source)

    def load(self, model_store, source: str | None = None):
        if source and source != self.resolve_source(model_store):
            return super().load(model_store, source=source)
        generator = self.server.get_generator()
        # The stage's cache folder and switch win, so both text_generator flavours share replies.
        generator.cache = ResponseCache(self.cache_dir) if self.use_cache else None
        return generator


def served_generator(text_generator: TextGenerator, served_model: str):
    """`served_model` on the server of a `ServerTextGenerator`; a clear error when the text_generator
    loads weights in process (no server configured)."""
    server = getattr(text_generator, "server", None)  # a ServerTextGenerator's backend
    if server is None:
        raise ValueError(
            f"served model {served_model!r} configured, but the text_generator resource "
            "has no server: set EMPATHY_DAG_OPENAI_BASE_URL (or use a ServerTextGenerator)"
        )
    generator = server.get_generator(model=served_model, cache_id=f"server:{served_model}")
    # The stage's cache folder and switch, as for the text_generator's own model (one cache object
    # for every endpoint when several servers share the work).
    generator.cache = ResponseCache(text_generator.cache_dir) if text_generator.use_cache else None
    return generator


def stage_resources(root: Path) -> dict:
    """Resource key -> resource instance, with every location under `root` (the data root).

    Generation runs in process unless EMPATHY_DAG_OPENAI_BASE_URL names an OpenAI-compatible server
    (vLLM, llama.cpp, a hosted API): then the same assets generate through it, with the same cache."""
    cache_dir = str(Path(root) / "generation_cache")
    server = openai_backend_from_env(cache_dir=cache_dir)
    if server is not None:
        return {"text_generator": ServerTextGenerator(server=server, cache_dir=cache_dir)}
    return {"text_generator": TextGenerator(cache_dir=cache_dir)}
