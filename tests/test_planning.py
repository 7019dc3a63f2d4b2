"""Planning stays light: every SLURM job parses the Snakefile again, so no heavy imports."""

from __future__ import annotations

import subprocess
import sys


def test_planning_imports_neither_torch_nor_lightning(root):
    code = (
        "import sys; sys.path.insert(0, 'src')\n"
        "from iclrepro import config, plan\n"
        "for scale in ('smoke', 'quick', 'paper'):\n"
        "    plan.build(config.load('config.yaml', {'scale': scale}))\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'matplotlib', 'pandas') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
