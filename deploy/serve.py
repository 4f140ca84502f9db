"""Serve attn-audit's deployments from this process: the audit of a model on a dataset on a cron (or interval)
schedule, and optionally the checkpoint watcher on a short interval. Each scheduled flow run executes in a
subprocess of this one, with its environment (RAY_ADDRESS, object-store credentials, ...).

    export PREFECT_API_URL=http://prefect-host:4200/api      # a real server: schedules need one
    export RAY_ADDRESS=ray-head:6379                            # optional: else each run starts a local Ray
    python deploy/serve.py --model builtin:fashion-vit --data builtin:fashion-canvas --limit 5000 \\
        --store s3://audits/store --cron "0 2 * * *" --watch /checkpoints --watch-interval 300

For deployments run by a work pool's workers instead of this process, see deploy/prefect.yaml.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_CRON = "0 2 * * *"  # nightly, 02:00 UTC


def build_parser() -> argparse.ArgumentParser:
    from attn_audit.flows.request import ComputeSpec, MapSpec
    from attn_audit.flows.request_options import add_options

    p = argparse.ArgumentParser(prog="deploy/serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="nightly", help="the audit deployment's name (default nightly)")
    add_options(p, MapSpec, required=("model", "data"))  # the audit's request, as `attn-audit audit` takes it
    add_options(p, ComputeSpec, skip=("force",))  # a nightly --force would recompute every night
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", default=DEFAULT_CRON, help=f"the audit's schedule (default '{DEFAULT_CRON}')")
    when.add_argument("--interval", type=float, help="the audit every N seconds instead of --cron")
    p.add_argument("--timezone", default="UTC", help="of --cron (default UTC)")
    p.add_argument("--watch", metavar="FOLDER", help="also serve the checkpoint watcher on this folder")
    p.add_argument("--watch-interval", type=float, default=300, help="seconds between looks (default 300)")
    p.add_argument("--watch-data", help="the watcher's first audit when the store has no baseline run yet")
    return p


def deployments(args: argparse.Namespace) -> list:
    """The RunnerDeployments to serve (nothing is sent to the server here)."""
    from attn_audit.flows.audit import audit
    from attn_audit.flows.request import ComputeSpec, MapSpec, build_request
    from attn_audit.flows.request_options import given
    from attn_audit.flows.watch import watch_checkpoints
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval

    # one flow run of each at a time; a run due while the previous one still works is cancelled, not queued (the
    # next look, or the next night, does the same work)
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    request = build_request(**given(args, MapSpec), **given(args, ComputeSpec))  # refused here when invalid
    schedule = Interval(args.interval) if args.interval else Cron(args.cron, timezone=args.timezone)
    out = [audit.to_deployment(
        name=args.name, parameters={"request": request.model_dump(mode="json", exclude_defaults=True)},
        concurrency_limit=one_at_a_time, tags=["attn-audit"], schedule=schedule,
        description=f"attn-audit of {args.model} on {args.data} into {request.compute.store}")]
    if args.watch:
        watch = {"folder": os.path.abspath(args.watch), "data": args.watch_data,
                 "compute": request.compute.model_dump(mode="json", exclude_defaults=True)}
        out.append(watch_checkpoints.to_deployment(
            name="checkpoints", interval=args.watch_interval, concurrency_limit=one_at_a_time, tags=["attn-audit"],
            parameters={k: v for k, v in watch.items() if v is not None},
            description=f"audit and compare each new checkpoint in {args.watch}"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("error: set PREFECT_API_URL to a Prefect server (`prefect server start`): schedules need one; "
              "Prefect's temporary server would schedule nothing", file=sys.stderr)
        return 1
    from attn_audit.flows.prefect_settings import configure_environment

    configure_environment(verbose=True)  # before Prefect is imported; a serving process shows its runs' logs
    from prefect import serve

    serve(*deployments(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
