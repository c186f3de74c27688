"""Export assets: the dataset (dialogues + preference pairs, with a card) and the adapters (with their
model cards), written to a local folder or an S3 prefix."""

import shutil
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from empathy_dag.defs.metadata import markdown_table
from empathy_dag.export.dataset import write_dataset
from empathy_dag.frames import concat_partitions
from empathy_dag.models import sha256_tree
from empathy_dag.resources import ModelStore
from empathy_dag.safe_paths import single_component
from empathy_dag.settings import data_root
from empathy_dag.storage_s3 import parse_s3_uri, s3_client, upload_folder

ALL_EXISTING = {"allow_missing_partitions": True}
# Written into every export folder: what tells an earlier export (replaceable) from any other folder.
EXPORT_MARKER = ".empathy_dag_export"


class ExportConfig(Config):
    destination: str = Field(
        default="",
        description="Folder or s3:// prefix; empty = beside the model "
        "store: <data root>/export/<name>, or <s3 base>/export/<name> in the aws profile.",
    )
    name: str = "empathy_dag_dialogues"
    adapters: list[str] = Field(
        default_factory=lambda: ["sft_checkpoint", "dpo_checkpoint"],
        description="Model-store folders copied next to the dataset, with their cards.",
    )


def default_destination(model_store: ModelStore, name: str) -> str:
    """Where an export goes when no destination is configured: next to the models, so switching the
    profile moves it to S3 with everything else."""
    if model_store.s3_prefix:
        base = model_store.s3_prefix.rstrip("/").removesuffix("/models")
        return f"{base}/export/{name}"
    return str(data_root() / "export" / name)


def _publish(local: Path, destination: str, endpoint_url: str = "") -> str:
    """Replace the destination with a finished folder. On S3 the files go first and a sha256 manifest
    last, and objects of an earlier export that this one lacks are deleted (as the model store does)."""
    if destination.startswith("s3://"):
        bucket, prefix = parse_s3_uri(destination)
        upload_folder(s3_client(endpoint_url), local, bucket, prefix)
        return destination.rstrip("/")
    target = Path(destination)
    if target.is_symlink():
        raise ValueError(f"export destination {destination} is a symlink; refusing to replace it")
    if target.exists():
        # Only an earlier export (its marker file) or an empty folder is replaced: a destination that
        # points at anything else (the model store, a home folder) is refused, never deleted.
        if not (target / EXPORT_MARKER).is_file() and any(target.iterdir()):
            raise ValueError(
                f"export destination {destination} exists and is not an earlier export (no "
                f"{EXPORT_MARKER}); refusing to replace it: choose an empty or new folder"
            )
        shutil.rmtree(target)
    shutil.copytree(local, target)
    return str(target)


@asset(
    group_name="export",
    code_version="export-v1",
    ins={
        "dataset_splits": AssetIn(metadata=ALL_EXISTING),
        "preference_pairs": AssetIn(metadata=ALL_EXISTING),
        "filter_report": AssetIn(metadata=ALL_EXISTING),
    },
    deps=["sft_checkpoint", "dpo_checkpoint"],
    kinds={"parquet", "huggingface"},
    description="The dialogues (with splits) and the EmPO preference pairs as a dataset folder that "
    "`datasets.load_dataset('parquet', data_dir=...)` loads, with a dataset card; the adapters beside it.",
)
def dataset_export(
    context: AssetExecutionContext,
    config: ExportConfig,
    model_store: ModelStore,
    dataset_splits,
    preference_pairs,
    filter_report,
) -> MaterializeResult:
    dialogues = concat_partitions(dataset_splits)
    pairs = concat_partitions(preference_pairs)
    report = concat_partitions(filter_report)
    filters = (
        dict(report.group_by("filter").len().sort("filter").iter_rows()) if "filter" in report.columns else {}
    )
    provenance = {
        "run_id": context.run_id,
        "filters": filters,
        "adapters": {},
    }
    # Names from config become path components: refused before anything is read or replaced.
    single_component(config.name, "ExportConfig.name")
    for name in config.adapters:
        single_component(name, "ExportConfig.adapters entry")
    destination = config.destination or default_destination(model_store, config.name)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / config.name
        local.mkdir(parents=True)
        (local / EXPORT_MARKER).write_text(context.run_id + "\n")
        for name in config.adapters:
            folder = model_store.fetch(name, missing_ok=True)
            if (folder / "adapter_config.json").is_file():
                shutil.copytree(folder, local / "adapters" / name)
                provenance["adapters"][name] = sha256_tree(folder)
        counts = write_dataset(dialogues, pairs, local, name=config.name, provenance=provenance)
        where = _publish(local, destination, model_store.endpoint_url)
    context.log.info(
        f"exported {counts['dialogues']} dialogues and {counts['preference_pairs']} pairs to {where}"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(where),
            "dialogues": MetadataValue.json(counts["dialogues"]),
            "preference_pairs": MetadataValue.json(counts["preference_pairs"]),
            "sources": MetadataValue.json(counts["sources"]),
            "adapters": MetadataValue.json(provenance["adapters"]),
            "load_with": f'datasets.load_dataset("parquet", data_dir="{where}/dialogues")',
            "per_emotion": markdown_table(dialogues.group_by("emotion").len().sort("emotion"), max_rows=28)
            if dialogues.height
            else MetadataValue.md("(no dialogues)"),
        }
    )
