"""Export assets: the dataset (dialogues + preference pairs, with a card) and the adapters (with their
model cards), written to a local folder or an S3 prefix."""

import shutil
import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from empathy_dag.export.dataset import write_dataset
from empathy_dag.io_managers import concat_partitions
from empathy_dag.metadata import markdown_table
from empathy_dag.models import sha256_tree
from empathy_dag.resources import ModelStore
from empathy_dag.settings import data_root

ALL_EXISTING = {"allow_missing_partitions": True}


class ExportConfig(Config):
    destination: str = Field(default="", description="Folder or s3:// prefix; empty = <data root>/export.")
    name: str = "empathy_dag_dialogues"
    adapters: list[str] = Field(default_factory=lambda: ["sft_checkpoint", "dpo_checkpoint"],
                                description="Model-store folders copied next to the dataset, with their cards.")


def _publish(local: Path, destination: str) -> str:
    """Copy a finished folder to its destination (fsspec handles s3:// with the default AWS chain)."""
    if destination.startswith("s3://"):
        import fsspec

        fs, _, _ = fsspec.get_fs_token_paths(destination)
        fs.put(str(local), destination.rstrip("/"), recursive=True)
        return destination
    target = Path(destination)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(local, target)
    return str(target)


@asset(
    group_name="export",
    code_version="export-v1",
    ins={"dataset_splits": AssetIn(metadata=ALL_EXISTING), "preference_pairs": AssetIn(metadata=ALL_EXISTING),
         "filter_report": AssetIn(metadata=ALL_EXISTING)},
    deps=["sft_checkpoint", "dpo_checkpoint"],
    kinds={"parquet", "huggingface"},
    description="The dialogues (with splits) and the EmPO preference pairs as a dataset folder that "
    "`datasets.load_dataset('parquet', data_dir=...)` loads, with a dataset card; the adapters beside it.",
)
def dataset_export(context: AssetExecutionContext, config: ExportConfig, model_store: ModelStore,
                   dataset_splits, preference_pairs, filter_report) -> MaterializeResult:
    dialogues = concat_partitions(dataset_splits)
    pairs = concat_partitions(preference_pairs)
    report = concat_partitions(filter_report)
    filters = dict(report.group_by("filter").len().sort("filter").iter_rows()) if "filter" in report.columns else {}
    provenance = {
        "run_id": context.run_id,
        "filters": filters,
        "adapters": {},
    }
    destination = config.destination or str(data_root() / "export" / config.name)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / config.name
        for name in config.adapters:
            folder = model_store.folder(name)
            if (folder / "adapter_config.json").is_file():
                shutil.copytree(folder, local / "adapters" / name)
                provenance["adapters"][name] = sha256_tree(folder)
        counts = write_dataset(dialogues, pairs, local, name=config.name, provenance=provenance)
        where = _publish(local, destination)
    context.log.info(f"exported {counts['dialogues']} dialogues and {counts['preference_pairs']} pairs to {where}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(where),
        "dialogues": MetadataValue.json(counts["dialogues"]),
        "preference_pairs": MetadataValue.json(counts["preference_pairs"]),
        "sources": MetadataValue.json(counts["sources"]),
        "adapters": MetadataValue.json(provenance["adapters"]),
        "load_with": f'datasets.load_dataset("parquet", data_dir="{where}/dialogues")',
        "per_emotion": markdown_table(dialogues.group_by("emotion").len().sort("emotion"), max_rows=28)
        if dialogues.height else MetadataValue.md("(no dialogues)"),
    })
