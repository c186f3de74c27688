"""The one `Definitions` of the project: every stage's definitions (`empathy_dag/defs/<stage>/definitions.py`)
merged, the main job, what the UI shows on every asset, and the resources of the active profile
(`profiles.resources_for`)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, map_asset_specs

from empathy_dag.defs.curate import definitions as curate
from empathy_dag.defs.evaluate import definitions as evaluate
from empathy_dag.defs.export import definitions as export
from empathy_dag.defs.generate import definitions as generate
from empathy_dag.defs.ingest import definitions as ingest
from empathy_dag.defs.metadata import with_code_links, with_owners
from empathy_dag.defs.ops import definitions as ops
from empathy_dag.defs.pairs import definitions as pairs
from empathy_dag.defs.profiles import resources_for
from empathy_dag.defs.promotion import definitions as promotion
from empathy_dag.defs.review import definitions as review
from empathy_dag.defs.run_policies import FRESHNESS_POLICIES
from empathy_dag.defs.train import definitions as train
from empathy_dag.defs.train.assets import MERGED_MODEL
from empathy_dag.defs.warehouse import definitions as warehouse

STAGES = [ingest, generate, curate, review, pairs, train, evaluate, warehouse, promotion, export, ops]


def with_ui_metadata(assets: list) -> list:
    """What the UI shows on every asset beyond its own decorator: owners (per group,
    `metadata.DEFAULT_OWNERS_BY_GROUP` / EMPATHY_DAG_OWNERS), links to the source code, and the freshness
    policies that match the schedules (`defs.run_policies.FRESHNESS_POLICIES`)."""
    assets = with_owners(assets)
    assets = list(
        map_asset_specs(
            lambda spec: (
                spec.replace_attributes(freshness_policy=FRESHNESS_POLICIES[spec.key.to_user_string()])
                if spec.key.to_user_string() in FRESHNESS_POLICIES
                else spec
            ),
            assets,
        )
    )
    return with_code_links(assets)


main_job = define_asset_job(
    "main_job",
    # Less the merged model: sharing is a step of its own (a second full copy of the weights).
    selection=AssetSelection.all() - AssetSelection.assets(MERGED_MODEL),
    description="Everything from the taxonomy to the leaderboard on the embedded default models.",
)


def project_definitions() -> Definitions:
    """The stages merged, with the UI metadata on every asset, the main job and the profile's resources."""
    stages = Definitions.merge(*(stage.defs for stage in STAGES))
    return Definitions(
        assets=with_ui_metadata(list(stages.assets)),
        asset_checks=stages.asset_checks,
        jobs=[main_job, *stages.jobs],
        sensors=stages.sensors,
        schedules=stages.schedules,
        resources=resources_for(),
    )


defs = project_definitions()
