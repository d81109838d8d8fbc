"""Step ids. NEVER rename one: Bytewax keys recovered state by step id, and a
renamed stateful step silently starts empty (tests/unit/test_steps.py guards this)."""

FLOW_ID = "mutation_aggregator"
INPUT = "kafka_input"
DECODE = "decode"
ROUTE = "route_to_committer"
APPLY = "apply"
REPORT = "report"
HEARTBEAT = "heartbeat"  # stateless: a tailing run's proof that each worker loop turns (sources/heartbeat.py)
HEARTBEAT_END = "heartbeat_end"
WORKER_MARK = "worker_mark"  # stateless: tells the input its worker (sources/worker_mark.py)
