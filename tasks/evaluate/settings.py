"""The evaluation's settings: every knob that changes a stored value, and a digest of them.

The digest of a test's settings goes into each of its rows' `details` ("eval") and into the store keys, so
evaluations of one run with different settings never mix, and the same evaluation twice writes nothing new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from attn_audit.models import AttnAuditError

TESTS = ("perturbation", "localisation", "sanity")
DEFAULT_TESTS = TESTS  # sanity re-explains only `sanity_samples` samples per randomised layer: cheap enough always
MODES = ("drop", "zero")
TEXT_STEPS = (0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)  # text and region tokens (SPEC §3)
IMAGE_STEPS = tuple(round(0.1 * i, 1) for i in range(10))  # image patches: 0, 0.1, ..., 0.9
# In the sanity check's digest: how its rows are cut and counted (2: parts of chunks.SANITY_PART samples, each note
# counting samples), so that a store evaluated before such a change computes it afresh instead of adding to it.
SANITY_LAYOUT = 2


@dataclass(frozen=True)
class EvalSettings:
    perturbation_mode: str = "drop"  # image patches: drop tokens | zero pixels (text always drops)
    steps: dict[str, tuple[float, ...]] = field(default_factory=lambda: {"image": IMAGE_STEPS})
    default_steps: tuple[float, ...] = TEXT_STEPS
    tau: float = 0.5  # BMEQ fixed threshold on the min-max normalised map
    top_k: float = 0.25  # BMEQ top-k fraction
    alpha: float = 0.5  # BMEQ = (1 − α)·precision + α·recall
    sanity_samples: int = 32
    resamples: int = 1000  # bootstrap
    seed: int = 0

    def __post_init__(self):
        if self.perturbation_mode not in MODES:
            raise AttnAuditError(f"perturbation mode must be one of {', '.join(MODES)}, got {self.perturbation_mode!r}")
        if not (0 <= self.tau <= 1 and 0 < self.top_k <= 1 and 0 <= self.alpha <= 1):
            raise AttnAuditError("need 0 ≤ tau ≤ 1, 0 < top_k ≤ 1 and 0 ≤ alpha ≤ 1")
        if self.sanity_samples < 1 or self.resamples < 1:
            raise AttnAuditError("sanity_samples and resamples must be ≥ 1")

    def steps_for(self, modality: str) -> tuple[float, ...]:
        return tuple(self.steps.get(modality, self.default_steps))

    def mode_for(self, modality: str) -> str:
        return self.perturbation_mode if modality == "image" else "drop"

    def for_modes(self, modes: tuple[str, ...]) -> EvalSettings:
        """The settings a model with these perturbation modes really runs: an image protocol it lacks becomes its
        first mode (DETR only zeroes; a text model only drops), so store keys and test names say what ran and
        evaluating again with the other flag finds the rows already there."""
        if modes and self.perturbation_mode not in modes:
            return replace(self, perturbation_mode=modes[0])
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def for_test(self, test: str) -> dict:
        """The settings that change the values of `test` (and nothing else)."""
        keys = {"perturbation": ("steps", "default_steps"),  # the mode is in the metric names
                "localisation": ("tau", "top_k", "alpha"), "sanity": ("sanity_samples", "seed"),
                "aggregate": ("resamples", "seed")}[test]
        values = {k: getattr(self, k) for k in keys}
        return {**values, "layout": SANITY_LAYOUT} if test == "sanity" else values

    def digest(self, test: str) -> str:
        return hashlib.sha256(json.dumps(self.for_test(test), sort_keys=True).encode()).hexdigest()[:12]

    def key_part(self, test: str) -> str:
        """What a store key of `test` says about the settings: its digest (and the ViT protocol)."""
        return f"{self.digest(test)}-{self.perturbation_mode}" if test == "perturbation" else self.digest(test)


def parse_tests(tests) -> tuple[str, ...]:
    """"perturbation,localisation" or a list → the tests in canonical order, unknown names refused."""
    names = tests.split(",") if isinstance(tests, str) else list(tests)
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in TESTS]
    if unknown or not names:
        raise AttnAuditError(f"unknown test(s) {unknown or names}; tests: {', '.join(TESTS)}")
    return tuple(t for t in TESTS if t in names)
