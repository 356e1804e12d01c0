"""Measure Cronos against its targets (DESIGN.md §6), never on the user's own data.

`python manage.py cronos_bench lateness|crowd|trigger|throughput|live|jitter|pages|all [--json]
[--shape embedded|scaled] [--engine q2|celery] [--seconds N] [--runs N] [--agents N]
[--workers N]`

Each benchmark runs in a sandbox of its own (a temporary directory and a fresh database; see
runs/bench/harness.py). Progress goes to stderr, the report (one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from django.core.management.base import CommandError

from audit.commands import CronosCommand
from runs.bench import harness as bench


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


class Command(CronosCommand):
    help = (
        "Benchmark Cronos against the targets of DESIGN.md section 6, in a throw-away sandbox "
        "(temporary directory and database): start lateness, a crowd of slots, manual trigger "
        "latency, throughput against bare tasks of the engine, or all of them; on django-q2 "
        "or Celery."
    )
    # The outer process must not look at the user's database at all, not even for checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("benchmark", choices=[*bench.BENCHMARKS, *bench.OWN_BENCHMARKS, "all"])
        parser.add_argument("--json", action="store_true", help="Print only the JSON report.")
        parser.add_argument(
            "--shape",
            choices=bench.SHAPES,
            help="embedded: SQLite and the ORM broker (the default on q2); scaled: PostgreSQL "
            "and Redis (the default, and the only shape, on celery).",
        )
        parser.add_argument(
            "--engine",
            choices=bench.ENGINES,
            default="q2",
            help="q2: django-q2 (default); celery: Celery workers, django-celery-beat for "
            "housekeeping, and on lateness Celery beat's own lateness beside Cronos's.",
        )
        parser.add_argument(
            "--seconds",
            type=positive_int,
            help="lateness: seconds measured (default 20); live: seconds of output (default 10).",
        )
        parser.add_argument(
            "--runs",
            type=positive_int,
            help="trigger: manual runs (default 30); throughput: tasks and runs (default 200).",
        )
        parser.add_argument(
            "--agents",
            type=positive_int,
            help="crowd: agents due in the same second (default 1000); lateness: default 10.",
        )
        parser.add_argument(
            "--workers",
            type=positive_int,
            help="Workers, django-q2's or Celery's (defaults: lateness 16, trigger 2, "
            "throughput 4).",
        )
        parser.add_argument(
            "--pg-url",
            default=bench.DEFAULT_PG_URL,
            help=f"scaled: the PostgreSQL server; a database is created and dropped "
            f"(default {bench.DEFAULT_PG_URL}).",
        )
        parser.add_argument(
            "--redis-url",
            default=bench.DEFAULT_REDIS_URL,
            help=f"scaled: a Redis database index for benchmarks; each sandbox's keys carry a "
            f"prefix of its own and are deleted after (default {bench.DEFAULT_REDIS_URL}).",
        )
        parser.add_argument(
            "--keep",
            action="store_true",
            help="Keep the sandbox (files, process logs, database) to look into; says where.",
        )
        # The command running itself inside the sandbox.
        parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, benchmark: str, inner: bool, **options):
        engine = options["engine"]
        opts = bench.BenchOptions(
            benchmark=benchmark,
            shape=options["shape"] or ("scaled" if engine == "celery" else "embedded"),
            engine=engine,
            seconds=options["seconds"],
            runs=options["runs"],
            agents=options["agents"],
            workers=options["workers"],
            pg_url=options["pg_url"],
            redis_url=options["redis_url"],
            keep=options["keep"],
        )
        try:
            if inner:
                if benchmark == "all":
                    raise bench.BenchError("--inner runs one benchmark")
                report = bench.run_inner(
                    benchmark, opts.shape, opts.engine, opts.parameters(benchmark), sys.stderr
                )
                self.stdout.write(json.dumps(report))
                return
            report = bench.run(opts, sys.stderr)
        except bench.BenchError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            # Everything started was stopped and the sandbox removed on the way out.
            if not inner:
                self.stderr.write("cronos_bench: interrupted; its processes and sandbox are gone")
            sys.exit(130)
        if not options["json"]:
            for line in bench.summary(report):
                self.stdout.write(line)
        self.stdout.write(json.dumps(report, indent=2))
