"""pyproject.toml and the conda environment list the same packages with the same ranges."""

from __future__ import annotations

import tomllib
import yaml


def test_conda_env_matches_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((root / "envs" / "iclrepro.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert sorted(pip) == sorted(project["dependencies"])


def test_lightning_malicious_releases_excluded(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lightning = next(dep for dep in project["dependencies"] if dep.startswith("lightning"))
    assert ">=2.6.4" in lightning and "!=2.6.2" in lightning and "!=2.6.3" in lightning
