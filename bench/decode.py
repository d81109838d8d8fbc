"""Decode speed: the current decoder against the one at git revision 19fa5ba, on the
same workload messages, after checking that both decide every message alike.

Run: .venv/bin/python -m bench.decode [count]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import ModuleType

from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas import mutation
from schemas.registry import load_registry

REFERENCE = "19fa5ba"
REPO = Path(__file__).resolve().parent.parent


def reference_decoder(directory: Path) -> ModuleType:
    """`schemas/mutation.py` and `schemas/values.py` as at REFERENCE, loaded from `directory`."""
    for name in ("values", "mutation"):
        text = subprocess.run(
            ["git", "show", f"{REFERENCE}:schemas/{name}.py"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        text = text.replace("from schemas.values import", "from reference_values import")
        (directory / f"reference_{name}.py").write_text(text)
        spec = importlib.util.spec_from_file_location(f"reference_{name}", directory / f"reference_{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def outcome(result) -> str:
    """A decoder's result as plain values, types included (the two modules have their own classes)."""
    values = dataclasses.astuple(result) if not hasattr(result, "raw") else (
        *(getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "raw"), id(result.raw)
    )
    plain = tuple(v.value if isinstance(v, Enum) else v for v in values)
    return f"{type(result).__name__}{plain!r}"


def seconds(decode, raws, registry) -> float:
    start = time.process_time()
    for raw in raws:
        decode(raw, registry)
    return time.process_time() - start


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    raws = [
        mutation.RawMessage("bench", 0, offset, message.key, message.value, message.timestamp_ms or now_ms)
        for offset, message in enumerate(Workload(seed=7).generate(count))
    ]
    with tempfile.TemporaryDirectory() as directory:
        reference = reference_decoder(Path(directory))
    for raw in raws:
        old, new = reference.decode(raw, registry), mutation.decode(raw, registry)
        assert outcome(old) == outcome(new), (raw, old, new)
    # CPU time, alternating rounds, each one's best: load from other processes should hit both alike.
    old, new = zip(*((seconds(reference.decode, raws, registry), seconds(mutation.decode, raws, registry))
                     for _ in range(5)))
    old_rate, new_rate = count / min(old), count / min(new)
    print(f"{count} messages, identical results")
    print(f"{REFERENCE}: {old_rate:,.0f} msg/s ({1e6 / old_rate:.2f} us/msg)")
    print(f"current: {new_rate:,.0f} msg/s ({1e6 / new_rate:.2f} us/msg)")
    print(f"ratio:   {new_rate / old_rate:.2f}x")


if __name__ == "__main__":
    main()
