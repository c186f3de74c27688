"""The stage asset modules of the definitions layer, for tests that build a `Definitions` of their own (a
job and a sensor over every stage's assets, without the SQL models or the promotion gate)."""

from dagster import load_assets_from_modules

from empathy_dag.defs.curate import assets as curate_assets
from empathy_dag.defs.evaluate import assets as evaluate_assets
from empathy_dag.defs.generate import assets as generate_assets
from empathy_dag.defs.ingest import assets as ingest_assets
from empathy_dag.defs.pairs import assets as pairs_assets
from empathy_dag.defs.review import assets as review_assets
from empathy_dag.defs.train import assets as train_assets

STAGE_ASSET_MODULES = [
    ingest_assets,
    generate_assets,
    curate_assets,
    review_assets,
    pairs_assets,
    train_assets,
    evaluate_assets,
]


def stage_assets() -> list:
    return load_assets_from_modules(STAGE_ASSET_MODULES)


def project_asset_graph():
    """The project's asset graph (what a sensor sees as `context.repository_def.asset_graph`)."""
    from empathy_dag.definitions import defs

    return defs.resolve_asset_graph()
