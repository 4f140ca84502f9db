"""Checkpoint comparison: how a run's maps and metrics differ from a baseline run's on the same samples
(Spearman rank correlation and top-k overlap per sample, metric deltas with bootstrap intervals, the most-changed
samples), stored in the `comparisons` table.

    summary = compare_runs("out/store", baseline="3f2a", run="9c1e")
"""

from attn_audit.tasks.compare.run import CompareSettings, compare_runs
from attn_audit.tasks.compare.stored import ComparisonSummary, comparisons_of, load_comparison

__all__ = ["CompareSettings", "ComparisonSummary", "compare_runs", "comparisons_of", "load_comparison"]
