"""The promotion gate: `promoted_model` and the checks that gate and report a new checkpoint."""

from dagster import Definitions

from empathy_dag.defs.promotion.assets import build_promotion_definitions

_assets, _checks = build_promotion_definitions(has_leaderboard=True)

defs = Definitions(assets=_assets, asset_checks=_checks)
