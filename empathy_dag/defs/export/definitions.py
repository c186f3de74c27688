"""The export stage's definitions."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.export import assets

defs = Definitions(assets=load_assets_from_modules([assets]))
