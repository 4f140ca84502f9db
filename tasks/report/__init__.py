"""The HTML report of a run: `write_report(store, run_id, out_dir)` → out_dir/index.html (+ PNGs), offline."""

from attn_audit.tasks.report.page import write_report

__all__ = ["write_report"]
