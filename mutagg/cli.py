"""The `mutagg` console script: every operator task is a subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import orjson
import psycopg
from bytewax.errors import BytewaxRuntimeError

from mutagg import logs, roles, security
from mutagg.migrate import MIGRATE_HINT, NotMigrated, require_migrated
from mutagg.settings import Settings, load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.errors import MutaggError
from schemas.registry import load_registry

log = logging.getLogger("mutagg")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mutagg", description="Edge mutations from Kafka into PostgreSQL.")
    parser.add_argument("--config", help="YAML settings file (also MUTAGG_CONFIG)")
    parser.add_argument("--kafka-bootstrap", dest="kafka_bootstrap")
    parser.add_argument("--database-url", dest="database_url")
    parser.add_argument("--schema", help="PostgreSQL schema of the tables (also MUTAGG_SCHEMA)")
    parser.add_argument("--registry")
    parser.add_argument("--recovery-dir", dest="recovery_dir")
    parser.add_argument("--log-level", dest="log_level")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="create or upgrade tables for the registry (idempotent)")
    migrate.add_argument("--grant-to", metavar="ROLE",
                         help="then give ROLE exactly the job's privileges (default: MUTAGG_JOB_ROLE, if set)")
    roles.add_commands(commands)
    topics = commands.add_parser("topics", help="Kafka topics").add_subparsers(dest="action", required=True)
    create = topics.add_parser("create", help="create the input, DLQ and status topics (idempotent)")
    create.add_argument("--partitions", type=int)
    check = topics.add_parser("check", help="report topics missing or differing from the settings; exit 6 if any")
    check.add_argument("--partitions", type=int, help="the input and status topics' expected partitions")
    acls = topics.add_parser("acls", help="the Kafka ACLs of the job and the edge nodes: print (default) or apply")
    acls.add_argument("--apply", action="store_true", help="create them, as the cluster's admin (idempotent)")
    acls.add_argument("--job-principal", default="User:mutagg-job", help="the job's principal (default %(default)s)")
    acls.add_argument("--edge", action="append", default=[], metavar="NODE[=PRINCIPAL]",
                      help="an edge node (repeat); its principal defaults to User:edge-NODE")

    run = commands.add_parser("run", help="run the dataflow")
    run.add_argument("--until-idle", action="store_true", help="exit 0 once every partition is drained")
    run.add_argument("--workers", type=int, default=1, help="worker threads in this process")
    run.add_argument("--process-id", type=int, help="this process's index in a cluster")
    run.add_argument("--addresses", help="comma-separated host:port of every cluster process")
    run.add_argument("--batch-size", type=int, dest="batch_size")
    run.add_argument("--window-ms", type=int, dest="window_ms")

    conflicts = commands.add_parser("conflicts", help="list, show and resolve conflicts")
    actions = conflicts.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list")
    listing.add_argument("--status", choices=["OPEN", "AUTO_RESOLVED", "MANUALLY_RESOLVED"])
    listing.add_argument("--entity-type")
    listing.add_argument("--limit", type=int, default=50)
    show = actions.add_parser("show")
    show.add_argument("conflict_id")
    resolve = actions.add_parser("resolve")
    resolve.add_argument("conflict_id")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--accept", action="store_true", help="apply the held mutation")
    how.add_argument("--reject", action="store_true", help="keep the current values")
    how.add_argument("--set", action="append", metavar="ATTR=VALUE", help="apply chosen values")

    dlq = commands.add_parser("dlq", help="the dead-letter topic").add_subparsers(dest="action", required=True)
    dlq_list = dlq.add_parser("list")
    dlq_list.add_argument("--limit", type=int, default=50)
    replay = dlq.add_parser("replay", help="re-submit DLQ records to the input topic (each at most once)")
    replay.add_argument("--code", action="append", help="only records rejected with this reason code")
    replay.add_argument("--limit", type=int, default=1_000_000)
    replay.add_argument("--dry-run", action="store_true")

    commands.add_parser("status", help="ledger, conflicts and tables at a glance")
    throttle = commands.add_parser("throttle", help="hold (on) or release (off) the job's writes; it keeps running")
    throttle.add_argument("state", choices=["on", "off"])
    throttle.add_argument("--reason", default="", help="why (shown by `mutagg status`, the logs and /readyz)")
    from mutagg import audit_cmd

    audit_cmd.add_parser(commands)
    from mutagg import verify_cmd

    verify_cmd.add_parser(commands)
    from mutagg import edge_key

    edge_key.add_parser(commands)
    scale = commands.add_parser("scale", help="autoscaling (k8s/overlays/prod-autoscale)").add_subparsers(
        dest="action", required=True)
    join = scale.add_parser("join", help="print the process count this pod starts with, once the cluster it "
                                         "replaces has stopped (run-cluster.sh)")
    join.add_argument("--pod", required=True, help="this pod's name")
    recovery = commands.add_parser("recovery", help="Bytewax recovery partitions").add_subparsers(
        dest="action", required=True
    )
    init = recovery.add_parser("init", help="create recovery partitions once")
    init.add_argument("--partitions", type=int, default=1)

    demo = commands.add_parser("demo", help="run the whole job on a built-in workload")
    demo.add_argument("--mutations", type=int, default=20_000)
    demo.add_argument("--no-services", action="store_true", help="do not start local Kafka/PostgreSQL")
    demo.add_argument("--workload", choices=["classic", "fleet"], default="classic",
                      help="classic: mutagg.workload (default); fleet: the edge simulator's ERP nodes (edge.erp)")

    bench = commands.add_parser("bench", help="pipeline vs limit, naive baseline and peer, on one workload")
    bench.add_argument("--mutations", type=int, help="workload size (default 1,000,000; --quick: 100,000)")
    bench.add_argument("--quick", action="store_true", help="a smoke run: 100,000 mutations, naive slice 5,000")
    bench.add_argument("--naive-slice", type=int, help="mutations for the row-by-row baseline (default 20,000)")
    bench.add_argument("--peer", action="store_true", default=True, help="run the Debezium JDBC sink peer (default)")
    bench.add_argument("--no-peer", action="store_false", dest="peer", help="skip the peer (Kafka Connect + Debezium)")
    bench.add_argument("--partitions", type=int, help="input topic partitions (default 4; --scale: 12)")
    bench.add_argument("--workers", type=int, default=1, help="worker threads of the job")
    bench.add_argument("--recovery", action="store_true", help="run the job with Bytewax recovery on")
    bench.add_argument("--seed", type=int, default=7, help="workload seed")
    bench.add_argument("--keep", action="store_true", help="keep the bench schemas and topics")
    bench.add_argument("--json", help="also write the results as JSON to this file")
    bench.add_argument("--latency", action="store_true", help="latency at a fixed offered rate instead")
    bench.add_argument("--rate", type=float, default=10_000.0, help="offered mutations/s with --latency")
    bench.add_argument("--duration", type=float, help="seconds of offered load with --latency (default 30)")
    bench.add_argument("--batch-size", type=int, dest="batch_size", help="the job's micro-batch size")
    bench.add_argument("--window-ms", type=int, dest="window_ms", help="the job's window in ms")
    bench.add_argument("--profile", metavar="PATH", help="record the pipeline run with py-spy (raw) into PATH")
    bench.add_argument("--critical", action="store_true",
                       help="critical changes while a backlog drains: alone, on the priority lane, without it")
    bench.add_argument("--backlog", type=int, default=500_000, help="standard mutations in the log with --critical")
    bench.add_argument("--critical-rate", type=float, default=200.0, dest="critical_rate",
                       help="critical mutations/s produced while the backlog drains with --critical (default 200)")
    bench.add_argument("--rounds", type=int,
                       help="with --critical (default 1) or --scale (default 2): repeat its phases this many times")
    bench.add_argument("--scale", action="store_true",
                       help="the partitioned commit scaled out: 1 committer, 2 shards on 1 and 2 workers and on 2 "
                            "processes, on one workload (default 200,000 mutations, 12 partitions)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k, None) for k in (
        "kafka_bootstrap", "database_url", "schema", "registry", "recovery_dir", "log_level", "batch_size",
        "window_ms",
    )}
    return load_settings(args.config, overrides=overrides)


def _print_json(document) -> None:
    print(orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2).decode())


TOPICS_DRIFT = 6
"""`mutagg topics check` found a topic missing or differing from the settings (as `verify`'s problems)."""
EXIT_CODES = {"ServiceUnavailable": 3, "BatchFailed": 4, "InputGap": 5, "DatabaseBehind": 7, "MigrationBlocked": 8}


def _root_cause(exc: BaseException) -> BaseException:
    """Bytewax wraps errors raised in steps; the first of ours in the chain is the one to report."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MutaggError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _report(exc: MutaggError) -> int:
    if not isinstance(exc, NotMigrated):  # that one says all in one line
        log.error(str(exc), extra={"error_type": type(exc).__name__})
    print(f"mutagg: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_CODES.get(type(exc).__name__, 2)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        logs.configure(settings.log_level)
        return _dispatch(args, settings)
    except MutaggError as exc:
        return _report(exc)
    except BytewaxRuntimeError as exc:
        cause = _root_cause(exc)
        if isinstance(cause, MutaggError):
            return _report(cause)
        raise
    except psycopg.errors.UndefinedTable as exc:  # a command not checked up front: still one line
        return _report(NotMigrated(f"the database is not migrated ({exc.diag.message_primary}); {MIGRATE_HINT}"))
    except psycopg.OperationalError as exc:
        failure = security.database_failure(exc, settings.database_url)  # credentials, certificate
        if failure is not None:
            return _report(failure)
        print(f"mutagg: PostgreSQL unreachable: {exc}", file=sys.stderr)
        return EXIT_CODES["ServiceUnavailable"]


_NEEDS_TABLES = {("conflicts", None), ("status", None), ("throttle", None), ("roles", None), ("dlq", "replay"),
                 ("audit", "export"), ("verify", None)}
"""Commands that read or write the job's tables: on an unmigrated database they say so first
(`run` too, once its services answer)."""


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "edge-key":  # needs the master key only: no registry, no services
        from mutagg import edge_key

        return edge_key.run(args, settings)
    if args.command == "scale":  # before the cluster forms: the Kubernetes API only
        from mutagg.rescaler import cluster_of, join

        print(join(cluster_of(settings), args.pod, settings.scale_join_timeout_s))
        return 0
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    if {(args.command, None), (args.command, getattr(args, "action", None))} & _NEEDS_TABLES:
        require_migrated(settings.database_url)
    if args.command == "migrate":
        from mutagg import migrate_cmd

        return migrate_cmd.run(settings, registry, args.grant_to)
    if args.command == "roles":
        return roles.run_command(args, settings, registry)
    if args.command == "topics" and args.action == "acls":
        from mutagg import acls

        return acls.run_command(settings, args.job_principal, args.edge, args.apply)
    if args.command == "topics":
        from mutagg.topics import check_topics, create_topics, warn_unless_log_append_time

        security.check_kafka(settings)
        if args.action == "check":
            drifted = check_topics(settings, args.partitions)
            print("\n".join(drifted) or "topics match the settings")
            return TOPICS_DRIFT if drifted else 0
        created = create_topics(settings, args.partitions)
        print("\n".join(f"created {name}" for name in created) or "topics exist")
        warn_unless_log_append_time(settings)  # an input topic created earlier may still be CreateTime
        return 0
    if args.command == "run":
        from mutagg import runner

        addresses = args.addresses.split(",") if args.addresses else None
        security.preflight(settings)  # rejected credentials or certificates fail now, with their cause
        require_migrated(settings.database_url, settings.service_deadline_s, registry)
        runner.run(settings, args.until_idle, args.workers, args.process_id, addresses)
        return 0
    if args.command == "conflicts":
        from mutagg import conflicts_cmd

        with psycopg.connect(settings.database_url) as connection:
            if args.action == "list":
                for row in conflicts_cmd.list_conflicts(connection, args.status, args.entity_type, args.limit):
                    print(
                        f"{row['conflict_id']}  {row['status']:<17} {row['entity_type']}:{row['entity_id']}  "
                        f"{','.join(row['attributes'])}  {row['strategy']}  winner={row['winner'] or '-'}  "
                        f"mutation={row['mutation_id']}"
                    )
            elif args.action == "show":
                _print_json(conflicts_cmd.show_conflict(connection, args.conflict_id))
            else:
                decision = "accept" if args.accept else "reject" if args.reject else "set"
                chosen = dict(item.split("=", 1) for item in (args.set or []))
                mutation = conflicts_cmd.resolve(connection, settings, registry, args.conflict_id, decision, chosen)
                print(f"resolution {mutation['id']} submitted; it closes the conflict when the job applies it")
        return 0
    if args.command == "dlq":
        from mutagg.dlq import read_dlq, replay_dlq

        if args.action == "replay":
            chosen = replay_dlq(settings, set(args.code) if args.code else None, args.limit, args.dry_run)
            verb = "would re-submit" if args.dry_run else "re-submitted"
            print(f"{verb} {len(chosen)} DLQ records to {settings.topic_mutations}")
            return 0
        for record in read_dlq(settings, args.limit):
            copies = f"  ({record['copies']} DLQ records)" if record["copies"] > 1 else ""
            print(f"{record['source']}  {record['code']}: {record['message']}  {record['value'][:80]!r}{copies}")
        return 0
    if args.command == "throttle":
        from mutagg.throttle_cmd import format_throttle, throttle_view
        from sinks.throttle_signals import set_pause

        with psycopg.connect(settings.database_url) as connection:
            set_pause(connection, args.state == "on", args.reason)
            print(format_throttle(throttle_view(connection, settings)))
        return 0
    if args.command == "status":
        from mutagg.report import format_live, format_summary, live_view, summary
        from mutagg.throttle_cmd import format_throttle, throttle_view

        with psycopg.connect(settings.database_url) as connection:
            report = summary(connection, registry)
            view = live_view(connection, settings)
            throttle = throttle_view(connection, settings)
        print(format_live(view))
        print(format_throttle(throttle))
        print(format_summary(report))
        return 0
    if args.command == "recovery":
        from bytewax.recovery import init_db_dir

        if not settings.recovery_dir:
            print("mutagg: set MUTAGG_RECOVERY_DIR or --recovery-dir", file=sys.stderr)
            return 2
        Path(settings.recovery_dir).mkdir(parents=True, exist_ok=True)
        init_db_dir(Path(settings.recovery_dir), args.partitions)
        print(f"created {args.partitions} recovery partitions in {settings.recovery_dir}")
        return 0
    if args.command == "bench":
        from bench.cli import main as bench_main

        return bench_main(args, settings)
    if args.command == "audit":
        from mutagg import audit_cmd

        return audit_cmd.run(args, settings, registry)
    if args.command == "verify":
        from mutagg import verify_cmd

        return verify_cmd.run(args, settings, registry)
    if args.command == "demo":
        from mutagg.demo import demo

        demo(settings, args.mutations, start_services=not args.no_services, workload=args.workload)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
