"""Start or attach Ray for a run, and stop only what was started here.

- Ray already initialised in this process (a notebook, a test session): used as it is, left running.
- RAY_ADDRESS set (`host:6379`, `ray://host:10001`, `auto`): attach to that cluster; at the end only this
  driver disconnects, the cluster keeps running. Token authentication is the cluster's business: export
  RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) as its admin says. Workers must be able to
  import attn-audit: install it on the nodes (the same version), or set ATTN_AUDIT_RAY_RUNTIME_ENV to a
  JSON runtime_env, e.g. '{"py_modules": ["/src/attn-audit/models", ...]}' or '{"working_dir": "."}',
  which is passed to ray.init. The model, the data and the store must be reachable from the workers under
  the same references (shared file system or object store URIs).
- Otherwise: a fresh local cluster (`address="local"`: never a stale one found under /tmp), no dashboard,
  a small object store (results do not travel through it: actors write to the store), token
  authentication off (RAY_AUTH_MODE=disabled unless exported: nothing outside this machine can reach it
  anyway), usage stats off. Shut down at the end.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

from attn_audit import models

OBJECT_STORE_BYTES = 256 * 1024 * 1024
RUNTIME_ENV_VAR = "ATTN_AUDIT_RAY_RUNTIME_ENV"


@dataclass
class RayInfo:
    mode: str  # "local" (started here), "attached" (RAY_ADDRESS), "existing" (already initialised)
    address: str
    seconds: float  # spent starting / connecting


def runtime_env_from_environment() -> dict | None:
    text = os.environ.get(RUNTIME_ENV_VAR, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise models.AttnAuditError(f"{RUNTIME_ENV_VAR} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise models.AttnAuditError(f"{RUNTIME_ENV_VAR} must be a JSON object (a Ray runtime_env)")
    return value


def ray_address() -> str:
    """The cluster RAY_ADDRESS names ("" = a local Ray of this process)."""
    return os.environ.get("RAY_ADDRESS", "").strip()


@contextmanager
def ray_session(num_cpus: int | None = None, verbose: bool = False):
    """Yields RayInfo; see the module docstring for what is started, attached or left alone."""
    import ray

    started = time.perf_counter()
    if ray.is_initialized():
        yield RayInfo("existing", ray.get_runtime_context().gcs_address, 0.0)
        return
    address = ray_address()
    common = dict(include_dashboard=False, logging_level=logging.INFO if verbose else logging.WARNING,
                  log_to_driver=verbose, configure_logging=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sigterm = signal.getsignal(signal.SIGTERM)
    if address:
        try:
            ray.init(address=address, runtime_env=runtime_env_from_environment(), **common)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise models.AttnAuditError(f"cannot attach to the Ray cluster at RAY_ADDRESS={address}: "
                                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        mode = "attached"
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=num_cpus or _cpu_count(), object_store_memory=OBJECT_STORE_BYTES,
                 **common)
        mode = "local"
    _restore_sigterm(sigterm)
    try:
        yield RayInfo(mode, ray.get_runtime_context().gcs_address, time.perf_counter() - started)
    finally:
        ray.shutdown()  # a local cluster stops; an attached driver only disconnects


def _restore_sigterm(handler) -> None:
    """ray.init makes SIGTERM call sys.exit; a handler the caller chose stays (the CLI's: SIGTERM = Ctrl-C)."""
    if callable(handler) and signal.getsignal(signal.SIGTERM) is not handler:
        signal.signal(signal.SIGTERM, handler)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
