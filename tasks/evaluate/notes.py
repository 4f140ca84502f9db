"""Why samples were skipped, counted per (method, modality, test, reason) and stored as `skipped` metric rows."""

from __future__ import annotations

from collections import Counter

from attn_audit.tasks.evaluate.rows import Rows


class Notes(Counter):
    def add(self, method: str, modality: str | None, test: str, reason: str, count: int = 1) -> None:
        if count > 0:
            self[(method, modality, test, reason)] += count

    def write(self, metrics: Rows, digest: str) -> None:
        """One row per note: metric `skipped`, sample_id null, value = number of samples."""
        for (method, modality, test, reason), count in sorted(self.items(), key=str):
            metrics.add(method=method, metric="skipped", modality=modality, value=float(count),
                        details={"test": test, "reason": reason, "eval": digest})

    def lines(self, test: str | None = None) -> list[str]:
        """'perturbation: 6 × chefer2021/text skipped — …'; of one `test` only, without its name, when given."""
        return [f"{'' if test else f'{t}: '}{count:g} × {method}/{modality or '-'} skipped — {reason}"
                for (method, modality, t, reason), count in sorted(self.items(), key=str) if test in (None, t)]
