"""Series names that the tidy tables write and the figures select by.

Evaluation (which imports torch) and figures (which must not) both read them from here, so
a renamed series cannot leave a figure filtering for a name no table holds any more.
"""

CHEN2024_MODELS = ("full", "pruned", "single-head")   # prune_probe's trained models, in drawing order
ZHANG2026_LOOPED = "looped trained layer"             # E4's looped model, drawn on top of NGD

# the `source` column: where a row's numbers come from (trained models, closed forms, baselines)
TRAINED, THEORY, BASELINE = "trained", "theory", "baseline"
