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
    p = argparse.ArgumentParser(prog="deploy/serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="nightly", help="the audit deployment's name (default nightly)")
    p.add_argument("--model", required=True, help="builtin:NAME, a checkpoint folder or a hub id")
    p.add_argument("--data", required=True, help="a data reference (builtin:NAME, imagefolder:PATH, ...)")
    p.add_argument("--store", required=True, help="store folder or URI, reachable from every Ray worker")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="default: every method")
    p.add_argument("--limit", type=int, help="audit only the first N samples")
    p.add_argument("--target", default="predicted", help="predicted (default), label or a class index")
    p.add_argument("--batch-size", type=int, help="samples per forward/backward pass in a worker")
    p.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, or one per CPU core)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per actor on a GPU cluster (default 1)")
    p.add_argument("--device", help="auto (default), cpu, cuda ...")
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
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval

    from flows.scheduled import scheduled_audit
    from flows.watch import watch_checkpoints

    # one flow run of each at a time; a run due while the previous one still works is cancelled, not queued (the
    # next look, or the next night, does the same work)
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)

    compute = {k: v for k, v in {"batch_size": args.batch_size, "workers": args.workers,
                                 "gpus_per_worker": args.gpus_per_worker, "device": args.device}.items()
               if v is not None}
    audit = {"model": args.model, "data": args.data, "store": args.store, "methods": args.methods,
             "limit": args.limit, "target": args.target, **compute}
    schedule = Interval(args.interval) if args.interval else Cron(args.cron, timezone=args.timezone)
    out = [scheduled_audit.to_deployment(
        name=args.name, parameters={k: v for k, v in audit.items() if v is not None}, concurrency_limit=one_at_a_time,
        description=f"attn-audit of {args.model} on {args.data} into {args.store}", tags=["attn-audit"],
        schedule=schedule)]
    if args.watch:
        watch = {"folder": os.path.abspath(args.watch), "store": args.store, "data": args.watch_data, **compute}
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
    from flows.prefect_settings import configure_environment

    configure_environment(verbose=True)  # before Prefect is imported; a serving process shows its runs' logs
    from prefect import serve

    serve(*deployments(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
