"""One edge node from the shell: inspect its outbox, deliver it, read its acks.

    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 status
    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 send --deadline 60
    python -m edge.node --node-id van-07 --outbox van-07.sqlite3 acks --deadline 30

Kafka and topic names come from the job's settings (`MUTAGG_*`, `--config`). The node
signs what it sends with its own key (`--node-key-file`, or `MUTAGG_EDGE_NODE_KEY_FILE`: the
file `mutagg edge-key` wrote; README "Edge signatures").
`send --round-limit N --pause S` paces a constrained uplink: at most N mutations
per round and S seconds between rounds.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edge.backoff import Backoff
from edge.client import EdgeConfig, EdgeNode
from edge.signing import InvalidNodeKey, load_node_key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge.node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the job's YAML settings file (Kafka, topics)")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--outbox", required=True, help="the node's SQLite outbox file")
    parser.add_argument("--delivery-timeout", type=float, default=30.0)
    parser.add_argument("--node-key-file", help="this node's key (default: MUTAGG_EDGE_NODE_KEY_FILE; none: unsigned)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="entries by state")
    send = commands.add_parser("send", help="deliver the outbox")
    send.add_argument("--deadline", type=float, default=60.0)
    send.add_argument("--round-limit", type=int, default=5000)
    send.add_argument("--pause", type=float, default=0.0, help="seconds between rounds")
    acks = commands.add_parser("acks", help="read acks until everything is decided")
    acks.add_argument("--deadline", type=float, default=30.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mutagg.settings import load_settings  # the one place that reads the environment

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(args.config)
    key_file = args.node_key_file or settings.edge_node_key_file
    try:
        node_key = load_node_key(key_file) if key_file else None
    except InvalidNodeKey as exc:
        print(f"edge.node: {exc}", file=sys.stderr)
        return 2
    config = EdgeConfig(
        node_id=args.node_id, outbox_path=args.outbox, kafka_config=settings.kafka_client_config(),
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status,
        delivery_timeout_s=args.delivery_timeout, backoff=Backoff(0.5, 2.0, 30.0),
        round_limit=getattr(args, "round_limit", 5000), node_key=node_key,
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
        for state, count in sorted(node.outbox.counts().items()):
            print(f"{state.value:<10} {count}")
        return 0


def _send(node: EdgeNode, deadline_s: float, pause_s: float) -> bool:
    report = node.send(deadline_s, pause_s)
    print(f"{report.delivered} delivered in {report.rounds} rounds, {report.failed} failed deliveries; "
          f"{node.undecided()} entries await the job's decision", flush=True)
    return report.drained


if __name__ == "__main__":
    sys.exit(main())
