"""The curate stage's definitions."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.curate import assets

defs = Definitions(assets=load_assets_from_modules([assets]))
