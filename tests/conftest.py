"""Shared fixtures. Tests run against the real definitions with every location under a temp folder,
and against the real embedded models (converted once per session)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Never reach for a model hub from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The weight-hash cache of this test session, not the user's (~/.cache/empathy_dag).
os.environ.setdefault(
    "EMPATHY_DAG_HASH_CACHE",
    os.path.join(tempfile.mkdtemp(prefix="empathy_dag_hashes_"), "weight_hashes.json"),
)

from empathy_dag.settings import shared_data_dir

SHARED = shared_data_dir()
FIXTURES = Path(__file__).parent / "fixtures"


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (real data lives in ../shared/data)")
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def resources(data_root: Path) -> dict:
    from empathy_dag.defs.profiles import local_resources

    return local_resources(data_root)


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct de-quantized from the embedded GGUF once per test session."""
    from empathy_dag.models import convert_gguf_to_safetensors, embedded_smollm2_gguf

    out = tmp_path_factory.mktemp("models") / "base_model"
    convert_gguf_to_safetensors(embedded_smollm2_gguf(), out)
    return out
