"""One edge node from the shell: inspect its outbox, deliver it, read its acks.

    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 status
    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 send --deadline 60
    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 acks --deadline 30
    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 sync --deadline 120
    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 outcomes

Kafka and topic names come from the job's settings (`MUTAGG_*`, `--config`). The node
signs what it sends with its own key (`--node-key-file`, or `MUTAGG_EDGE_NODE_KEY_FILE`: the
file `mutagg edge-key` wrote; README "Edge signatures").
`send --round-limit N --pause S` paces a constrained uplink: at most N mutations
per round and S seconds between rounds. `sync` is what a node that comes back runs:
send, read acks, send again what stays unanswered (acks lost to the status topic's
retention, or unanswered for `--requeue-after` seconds), until everything is decided.
`outcomes` lists the changes the job rejected, held as conflicts, or failed, with why.
`status` also says how far behind the central job is (the central-state topic); while it
is overloaded, changes of critical entity types (the registry's, `--registry`, default
`MUTAGG_REGISTRY`) go first and the rest wait up to `--defer-max` seconds (README
"Edge nodes: when the centre is behind").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from edge.backoff import Backoff
from edge.central import explain_central
from edge.client import EdgeConfig, EdgeNode
from edge.criticality import CriticalityError, load_criticality
from edge.erp import explain
from edge.signing import InvalidNodeKey, load_node_key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge.node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the job's YAML settings file (Kafka, topics)")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--outbox", required=True, help="the node's SQLite outbox file")
    parser.add_argument("--delivery-timeout", type=float, default=30.0)
    parser.add_argument("--requeue-after", type=float, default=900.0,
                        help="seconds a delivered change may stay unanswered before it is sent again")
    parser.add_argument("--requeue-max", type=float, default=86_400.0,
                        help="the longest wait between resends of one change (the wait doubles per resend)")
    parser.add_argument("--node-key-file", help="this node's key (default: MUTAGG_EDGE_NODE_KEY_FILE; none: unsigned)")
    parser.add_argument("--registry", help="the entity registry, for criticality (default: MUTAGG_REGISTRY)")
    parser.add_argument("--behind-after", type=float, default=60.0, help="seconds of central delay shown as behind")
    parser.add_argument("--overloaded-after", type=float, default=600.0,
                        help="seconds of central delay shown as overloaded (critical changes first)")
    parser.add_argument("--defer-max", type=float, default=300.0,
                        help="the longest a standard change waits while the centre is overloaded")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="entries by state")
    send = commands.add_parser("send", help="deliver the outbox")
    send.add_argument("--deadline", type=float, default=60.0)
    send.add_argument("--round-limit", type=int, default=5000)
    send.add_argument("--pause", type=float, default=0.0, help="seconds between rounds")
    acks = commands.add_parser("acks", help="read acks until everything is decided")
    acks.add_argument("--deadline", type=float, default=30.0)
    sync = commands.add_parser("sync", help="send and read acks until everything is decided")
    sync.add_argument("--deadline", type=float, default=120.0)
    commands.add_parser("outcomes", help="changes rejected, held as conflicts, or failed, with the reason")
    return parser


def main(argv: list[str] | None = None) -> int:
    from mutagg.settings import load_settings  # the one place that reads the environment

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(args.config)
    key_file = args.node_key_file or settings.edge_node_key_file
    try:
        node_key = load_node_key(key_file) if key_file else None
        criticality = load_criticality(args.registry or settings.registry)
    except (InvalidNodeKey, CriticalityError) as exc:
        print(f"edge.node: {exc}", file=sys.stderr)
        return 2
    config = EdgeConfig(
        node_id=args.node_id, outbox_path=args.outbox, kafka_config=settings.kafka_client_config(),
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status,
        topic_critical=settings.lane_topic, priority_lane=settings.priority_lane,
        delivery_timeout_s=args.delivery_timeout, backoff=Backoff(0.5, 2.0, 30.0),
        round_limit=getattr(args, "round_limit", 5000), node_key=node_key,
        requeue_after_s=args.requeue_after, requeue_max_s=args.requeue_max,
        topic_central_state=settings.topic_central_state, criticality=criticality,
        behind_after_s=args.behind_after, overloaded_after_s=args.overloaded_after, defer_max_s=args.defer_max,
    )
    with EdgeNode(config) as node:
        if node.outbox.recovered:
            print(f"{node.outbox.recovered} deliveries were unknown after a restart; sending them again",
                  file=sys.stderr, flush=True)
        if args.command == "send":
            return 0 if _send(node, args.deadline, args.pause) else 1
        if args.command == "acks":
            decided = node.wait_until_decided(args.deadline)
            print("everything decided" if decided else f"{node.undecided()} entries still undecided")
            return 0 if decided else 1
        if args.command == "sync":
            decided = _sync(node, args.deadline)
            print("everything decided" if decided else f"{node.undecided()} entries still undecided")
            return 0 if decided else 1
        if args.command == "outcomes":
            for outcome in node.outcomes():
                print(f"{outcome.mutation_id}\t{outcome.status}\t{outcome.reason or ''}\t{explain(outcome)}")
            return 0
        for state, count in sorted(node.outbox.counts().items()):
            print(f"{state.value:<10} {count}")
        view = node.central_view(timeout_s=2.0)
        print(f"central    {view.state.value} ({explain_central(view, node.undecided())})")
        return 0


def _sync(node: EdgeNode, deadline_s: float) -> bool:
    """Send, read acks (which may put unanswered changes back to be sent), and again, until
    nothing awaits a decision or `deadline_s` has passed."""
    give_up_at = time.monotonic() + deadline_s
    while True:
        node.send(max(0.1, give_up_at - time.monotonic()))
        report = node.receive_acks(0.5)
        if report.lost:
            print(f"{report.lost} acks were deleted before this node read them (the status topic's "
                  f"retention); unanswered changes are sent again", file=sys.stderr, flush=True)
        if not node.undecided():
            return True
        if time.monotonic() >= give_up_at:
            return False


def _send(node: EdgeNode, deadline_s: float, pause_s: float) -> bool:
    report = node.send(deadline_s, pause_s)
    print(f"{report.delivered} delivered in {report.rounds} rounds, {report.failed} failed deliveries; "
          f"{node.undecided()} entries await the job's decision; {report.deferred} deferred (the centre is "
          "overloaded; they stay in the outbox)", flush=True)
    return report.drained


if __name__ == "__main__":
    sys.exit(main())
