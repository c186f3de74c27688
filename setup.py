"""Only what pyproject.toml cannot say: the design card's top-level folders (`assets/`, `dbt_like_sql/`,
`resources/`) stay at the top of the repository, and a built wheel carries copies of them inside the package
(`empathy_dag/_shipped/`), where `empathy_dag.settings.shipped_dir` finds them after a non-editable install."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("assets", "dbt_like_sql", "resources")  # = empathy_dag.settings.SHIPPED_FOLDERS


class BuildPyWithShippedFolders(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the folders from the source tree itself
        target = Path(self.build_lib) / "empathy_dag" / "_shipped"
        for name in SHIPPED_FOLDERS:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(
                ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store")
            )


setup(cmdclass={"build_py": BuildPyWithShippedFolders})
