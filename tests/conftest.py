"""Settings for the whole test run. Under pytest-xdist (`make test` runs two workers, one per core of the 2-core
machines the suite is sized for) each worker — and every process it starts — computes on one thread: two workers
with torch's default of one thread per core would fight over the cores. xdist also hands its workers the
controller's terminal size as COLUMNS / LINES, which would fix the width of every rich console created at import;
a worker sees what a plain run sees instead."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # read when torch is first imported, here and in subprocesses
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
