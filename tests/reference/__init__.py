"""Deliberately simple, per-sample reference implementation of SPEC sections 1-2.

Written from /work/shared/SPEC.md only (independently of ``models/``), so tests can compare the
production batched engine against it. One sample at a time, float64, explicit loops, full matrices.
"""
