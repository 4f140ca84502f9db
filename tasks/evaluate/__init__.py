"""Downstream evaluation of a stored run (SPEC.md §3–5): perturbation tests, ground-truth localisation, the
sanity check, aggregation with bootstrap intervals and method rankings. See docs/evaluation.md.

    from attn_audit.tasks.evaluate import evaluate_run
    summary = evaluate_run("out/store", run_id, tests=("perturbation", "localisation"))
"""

from attn_audit.tasks.evaluate.aggregate import stored_summary
from attn_audit.tasks.evaluate.run import EvaluationSummary, evaluate_run
from attn_audit.tasks.evaluate.settings import DEFAULT_TESTS, IMAGE_STEPS, TESTS, TEXT_STEPS, EvalSettings
from attn_audit.tasks.evaluate.specs import METRICS, Metric, metric_spec

__all__ = ["DEFAULT_TESTS", "IMAGE_STEPS", "METRICS", "TESTS", "TEXT_STEPS", "EvalSettings", "EvaluationSummary",
           "Metric", "evaluate_run", "metric_spec", "stored_summary"]
