"""The generate stage's definitions."""

from dagster import Definitions, load_assets_from_modules

from empathy_dag.defs.generate import assets

defs = Definitions(assets=load_assets_from_modules([assets]))
