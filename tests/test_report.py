"""The HTML report at the smoke scale, opened in a real headless browser (Debian's chromium).

Snakemake's report is a single page whose results (figures, the claim table) are embedded
as data URIs and shown on demand by its JavaScript app. The test opens the report itself
(the app must render every paper's category; a screenshot is saved), then loads every
embedded figure and the embedded claim table, exactly as the report holds them, in a
harness page in the same browser and reads back what the browser decoded.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import SMOKE, copy_run, snakemake
from iclrepro import config, plan

pytestmark = pytest.mark.e2e

BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--disable-sync",
                 "--disable-background-networking", "--no-first-run", "--virtual-time-budget=15000")
EMBEDDED = re.compile(r'"data_uri": "(data:(?P<type>[a-z/+\-]+);charset=utf8;filename=(?P<name>[^;]+);base64,'
                      r'(?P<payload>[^"]+))"')
HARNESS_SCRIPT = """
window.addEventListener('load', () => {
  const images = [...document.images].map(i => [i.id, i.complete ? i.naturalWidth : 0]);
  const table = document.getElementById('claims').contentDocument;
  const claims = [...table.querySelectorAll('table.claims tbody tr')].map(row => row.cells[1].textContent);
  document.getElementById('out').textContent = JSON.stringify({images, claims});
});
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (needs root)."""
    if shutil.which("chromium") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("chromium is not installed and this machine cannot install it (needs root and apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, env=env)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory) -> Path:
    workdir = copy_run(smoke_run, tmp_path_factory.mktemp("report") / "run")
    snakemake(workdir, "--report", "results/report.html", *SMOKE)
    return workdir / "results" / "report.html"


def browse(chromium: str, page: Path, *args: str) -> str:
    result = subprocess.run([chromium, *BROWSER_FLAGS, *args, page.as_uri()], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def harness(report: Path, target: Path) -> Path:
    """A page holding every embedded figure as an <img> and the claim table in an iframe."""
    embedded = {match["name"]: match for match in EMBEDDED.finditer(report.read_text())}
    images = [f'<img id="{name}" src="{match[1]}">' for name, match in embedded.items()
              if match["type"] == "image/png"]
    claims = base64.b64decode(embedded["claims.html"]["payload"]).decode()
    target.write_text(f'<!doctype html><html><body>{"".join(images)}'
                      f'<iframe id="claims" srcdoc="{html.escape(claims)}"></iframe><pre id="out"></pre>'
                      f'<script>{HARNESS_SCRIPT}</script></body></html>')
    return target


def seen_by_browser(chromium: str, page: Path) -> dict:
    dom = browse(chromium, page, "--dump-dom")
    return json.loads(html.unescape(re.search(r'<pre id="out">(.*?)</pre>', dom, flags=re.S)[1]))


def test_report_renders_every_figure_and_the_claim_table_in_a_browser(chromium, report, tmp_path):
    workdir = report.parents[1]
    planned = plan.build(config.load(workdir / "config.yaml", {"scale": "smoke"}, workdir))
    figures = {node.name for node in planned.nodes["draw"].values()}
    papers = {node.paper for node in planned.nodes["claims"].values()}
    claims = pd.concat(pd.read_parquet(path) for path in (workdir / "results" / "claims").glob("*.parquet"))

    dom = browse(chromium, report, "--dump-dom")
    assert all(category in dom for category in ["Claims", *papers])
    browse(chromium, report, "--window-size=1400,1000", f"--screenshot={tmp_path / 'report.png'}")
    assert (tmp_path / "report.png").stat().st_size > 10_000

    seen = seen_by_browser(chromium, harness(report, tmp_path / "harness.html"))
    widths = dict(seen["images"])
    assert set(widths) == {f"{name}.png" for name in figures}
    assert all(width > 100 for width in widths.values()), widths
    assert sorted(seen["claims"]) == sorted(claims["claim_id"])
