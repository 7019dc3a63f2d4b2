"""Every planned figure has a caption for the report (workflow/report/<paper>/<name>.rst)."""

from __future__ import annotations

from iclrepro import config, plan


def test_every_figure_has_a_caption(root):
    for scale in config.SCALES:
        planned = plan.build(config.load(root / "config.yaml", {"scale": scale}, root))
        for draw in planned.nodes["draw"].values():
            caption = root / "workflow" / "report" / draw.paper / f"{draw.name}.rst"
            assert caption.is_file() and caption.read_text().strip(), caption
