"""The pairs stage's definitions."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.pairs import assets

defs = Definitions(assets=load_assets_from_modules([assets]))
