"""Deliberately simple, per-sample reference implementation of SPEC sections 1-2.

Written from the specification only (docs/method.md §1–2; independently of ``models/``), so tests can compare the
production batched engine against it. One sample at a time, float64, explicit loops, full matrices.
"""
