"""The `persistence-monitor` command line (DESIGN.md §3.1).

Exit codes: 0 success; 1 a run failed or is partial (some cells failed); 2 bad configuration or
usage — always with a message naming the field, never a traceback or a secret's value.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from .. import __version__
from ..errors import ConfigError, MonitorError
from ..settings import DEFAULT_CONFIG_NAME, Settings, find_config, load_settings, parse_duration
from ..sources import with_model_defaults
from ..store import Store

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DEMO_DIR = "persistence-monitor-demo"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="persistence-monitor",
        description="Is each deployed pre-trained model still persistent? Re-runs a compact fine-tune grid "
        "(tasks × datasets × strategies × seeds) and scores it.",
    )
    parser.add_argument("--version", action="version", version=f"persistence-monitor {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def config_options(sub: argparse.ArgumentParser, demo: bool) -> None:
        group = sub.add_mutually_exclusive_group()
        group.add_argument(
            "--config",
            metavar="FILE",
            help="config file (default: $PM_CONFIG, else ./persistence-monitor.yaml)",
        )
        if demo:
            group.add_argument(
                "--demo",
                action="store_true",
                help=f"use the demo workspace (built on first use in ./{DEFAULT_DEMO_DIR}, or $PM_DEMO_DIR)",
            )

    serve = commands.add_parser("serve", help="run the daemon: schedule, poll, serve metrics and the API")
    config_options(serve, demo=True)
    serve.add_argument(
        "--feed-every",
        metavar="DURATION",
        default="3m",
        help="with --demo: publish a new, more drifted snapshot this often (default 3m)",
    )

    run_once = commands.add_parser("run-once", help="evaluate the grid once, store and print the results")
    config_options(run_once, demo=True)
    run_once.add_argument(
        "--json", action="store_true", help="print the run document (JSON) on stdout, nothing else"
    )
    run_once.add_argument(
        "--probes",
        action="store_true",
        help="only the cheap cells (knn, linear) and the early_warning estimates: no P(M), for a quick warning",
    )

    demo = commands.add_parser("demo", help="write a self-contained demo workspace")
    demo.add_argument(
        "dir", nargs="?", default=None, metavar="DIR", help=f"where (default ./{DEFAULT_DEMO_DIR})"
    )
    demo.add_argument("--force", action="store_true", help="rebuild even if DIR already holds a demo")

    report = commands.add_parser("report", help="write an HTML report (with PNG plots) of the latest runs")
    config_options(report, demo=True)
    report.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="report.html (PNG plots are written beside it), or a .png",
    )

    compare = commands.add_parser(
        "compare", help="the models ranked by P(M), and the paired difference of every pair (from the store)"
    )
    config_options(compare, demo=True)
    compare.add_argument(
        "--models", metavar="A,B", help="compare only these models (comma-separated names from models[])"
    )
    compare.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, nothing else"
    )

    prune = commands.add_parser("prune", help="apply the retention settings now (what serve does hourly)")
    config_options(prune, demo=True)
    prune.add_argument("--dry-run", action="store_true", help="show what would be pruned, remove nothing")

    check = commands.add_parser(
        "check-config", help="validate a config, resolve every model and source, show the grid"
    )
    config_options(check, demo=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    # Tables are for people: when piped, keep them wide rather than wrapped at 80 columns.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    err = Console(stderr=True, highlight=False)
    out = Console(highlight=False, width=width)
    try:
        if args.command == "run-once":
            return _run_once(args, out, err)
        if args.command == "serve":
            return _serve(args, err)
        if args.command == "report":
            from ._report import write_report

            settings = _settings(args, err)
            store = Store.open(settings.resolved_database_url)
            try:
                written = write_report(settings, store, Path(args.out))
            finally:
                store.close()
            err.print("wrote " + ", ".join(str(p) for p in written))
            return EXIT_OK
        if args.command == "demo":
            from ..demo import build_demo

            target = Path(args.dir or os.environ.get("PM_DEMO_DIR") or DEFAULT_DEMO_DIR)
            config = build_demo(target, force=args.force, console=err)
            err.print(
                f"demo workspace ready: {target}\n"
                f"  persistence-monitor run-once --config {config}\n"
                f"  persistence-monitor check-config --config {config}"
            )
            return EXIT_OK
        if args.command == "compare":
            return _compare(args, out, err)
        if args.command == "prune":
            return _prune(args, out, err)
        if args.command == "check-config":
            from ._check import check_config

            return check_config(_settings(args, err), out)
    except ConfigError as exc:
        _error(exc)
        return EXIT_USAGE
    except MonitorError as exc:
        _error(exc)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        err.print("interrupted: finished fine-tunes are stored; the next run resumes from them")
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def _compare(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ._compare import compare, parse_models

    settings = _settings(args, err)
    models = parse_models(settings, args.models)  # unknown names: exit 2, before the store is opened
    store = Store.open(settings.resolved_database_url)
    try:
        compare(settings, store, models, as_json=args.json, out=out)
    finally:
        store.close()
    return EXIT_OK


def _prune(args: argparse.Namespace, out: Console, err: Console) -> int:
    from datetime import UTC, datetime

    from rich.table import Table

    from ..pipeline import prune_store, retention_policy

    settings = _settings(args, err)
    store = Store.open(settings.resolved_database_url)
    try:
        now = datetime.now(UTC)
        policy = retention_policy(settings, now=now)
        with err.status("counting what retention would prune" if args.dry_run else "pruning"):
            report = prune_store(settings, store, now=now, dry_run=args.dry_run)
    finally:
        store.close()
    retention = settings.retention
    history = (
        "forever" if policy.history_before is None else f"before {policy.history_before:%Y-%m-%d %H:%M} UTC"
    )
    table = Table(title="would be pruned (dry run: nothing removed)" if args.dry_run else "pruned")
    table.add_column("what", justify="left")
    table.add_column("rows", justify="right")
    table.add_column("rule", justify="left")
    table.add_row(
        "cells",
        f"{report.cells:,} (of {report.cell_runs:,} runs)",
        f"runs started before {policy.cells_before:%Y-%m-%d %H:%M} UTC ({retention.cells_days:g} days), "
        f"but the latest {retention.keep_runs} keep theirs",
    )
    table.add_row("trials", f"{report.trials:,}", "no run that keeps its cells, nor a running run, uses them")
    table.add_row(
        "runs",
        f"{report.runs:,}",
        f"with their P(M): runs started {history}" if policy.history_before else "kept forever",
    )
    table.add_row(
        "notifications",
        f"{report.notifications:,}",
        f"delivered or dropped before {policy.notifications_before:%Y-%m-%d %H:%M} UTC",
    )
    out.print(table)
    if not retention.enabled and not args.dry_run:
        err.print(
            "note: retention.enabled is false, so serve does not prune by itself; this prune ran on demand"
        )
    return EXIT_OK


def _error(exc: BaseException) -> None:
    # Plain text, never wrapped or styled: people grep these and paste them into tickets.
    sys.stderr.write(f"error: {exc}\n")
    sys.stderr.flush()


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _settings(args: argparse.Namespace, err: Console) -> Settings:
    if getattr(args, "demo", False):
        from ..demo import build_demo

        path = build_demo(Path(os.environ.get("PM_DEMO_DIR") or DEFAULT_DEMO_DIR), console=err)
    else:
        path = find_config(args.config)
    return _load(path)


def _load(path: Path) -> Settings:
    """The settings of `path`, with each model's image_size/normalize from the model where unset."""
    return with_model_defaults(load_settings(path))


def _serve(args: argparse.Namespace, err: Console) -> int:
    from ._serve import serve

    # A service logs with timestamps, at INFO; the libraries' chatter only with -vv.
    level = min(logging.getLogger().level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if level > logging.DEBUG:
        for noisy in ("apscheduler", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.demo:
        root = Path(os.environ.get("PM_DEMO_DIR") or DEFAULT_DEMO_DIR)
        _build_demo_elsewhere(root)
        settings = _load(root / DEFAULT_CONFIG_NAME)
        from ..demo import DemoFeed

        try:
            every = float(parse_duration(args.feed_every))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError([("--feed-every", str(exc))]) from None
        err.print(
            f"demo: serving {root} on http://{settings.server.host}:{settings.server.port}/ "
            f"(metrics at /metrics); a new, more drifted snapshot every {args.feed_every}"
        )
        return serve(settings, feed=DemoFeed(root.resolve()), feed_every=every)
    return serve(_load(find_config(args.config)))


def _deliver_notifications(settings: Settings, store: Store, err: Console) -> None:
    """Deliver what the run put in the outbox, waiting at most alerts.drain_timeout."""
    if not settings.alerts.notifiers and not store.outbox_pending():
        return  # (leftovers for notifiers no longer configured are dropped by the drain)
    from ..notifiers import Dispatcher, build_notifiers, new_http_client

    client = new_http_client()
    try:
        done = Dispatcher(store, build_notifiers(settings.alerts.notifiers, client)).drain(
            settings.alerts.drain_timeout
        )
        pending = store.outbox_pending()
    finally:
        client.close()
    if not done:
        err.print(
            f"[yellow]warning:[/yellow] {pending} notification(s) not delivered within "
            f"{settings.alerts.drain_timeout:g}s: they stay in the outbox for the next run or the daemon"
        )


def _build_demo_elsewhere(root: Path) -> None:
    """Build the demo workspace in a child process: pre-training imports torch, the daemon must not."""
    import subprocess

    if (root / DEFAULT_CONFIG_NAME).exists() and (root / ".persistence-monitor-demo").exists():
        return
    result = subprocess.run([sys.executable, "-m", "monitor", "demo", str(root)], check=False)
    if result.returncode != 0:
        raise MonitorError(f"building the demo workspace in {root} failed (exit code {result.returncode})")


def _run_once(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ..engine import build_executor
    from ..pipeline import run_document, run_evaluation
    from ._console import ProgressObserver, render_report

    settings = _settings(args, err)
    store = Store.open(settings.resolved_database_url)
    executor = build_executor(settings)
    executor.start(wait=False)  # the worker imports torch while sources are resolved
    run_id = uuid.uuid4().hex
    started = time.monotonic()
    try:
        with ProgressObserver(err, seeds=len(settings.seeds)) as observer:
            report = run_evaluation(
                settings, store, executor, trigger="cli", observer=observer, run_id=run_id, probes=args.probes
            )
        executor.close()  # the workers are done: free them before waiting on deliveries
        _deliver_notifications(settings, store, err)
    except MonitorError as exc:
        if args.json:  # the contract: exactly one document on stdout, also for a failed run
            document = {
                "run_id": run_id,
                "status": "failed",
                "seconds": round(time.monotonic() - started, 3),
                "models": [],
                "error": str(exc),
            }
            sys.stdout.write(json.dumps(document, indent=2) + "\n")
        raise
    finally:
        executor.close()
        store.close()
    if args.json:
        document = run_document(
            report.run_id,
            report.status,
            report.seconds,
            [(m.score, m.cells) for m in report.models],
            roles={m.name: m.role for m in settings.models},
            estimates={m.score.model: m.estimates for m in report.models},
            probes=report.probes,
        )
        document["alerts"] = report.alerts  # an extension: the alerts this run fired or resolved
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        render_report(report, out, roles={m.name: m.role for m in settings.models})
        for event in report.alerts:
            out.print(
                f"alert [bold]{event['alert']}[/bold] {event['kind']} for {event['model']}: {event['summary']}"
            )
    return EXIT_OK if report.status == "completed" else EXIT_RUN_FAILED
