"""Whether two engines decided a chunk alike: the same ledger rows, conflict rows, entity rows
and acknowledgements (each compared as a whole frame, rows in key order)."""

from __future__ import annotations

from typing import Any

from prototypes.baseline import outcome_frame
from sinks.decisions import BatchDecisions, Rendered

_KEYS = {"ledger": "mutation_id", "conflicts": "conflict_id", "outcomes": "offset"}


def baseline_tables(decisions: BatchDecisions, rendered: Rendered) -> dict[str, Any]:
    """The Python engine's result in the prototypes' form."""
    return {"ledger": rendered.ledger, "conflicts": rendered.conflicts, "outcomes": outcome_frame(decisions),
            "entities": dict(rendered.entities)}


def differences(expected: dict[str, Any], actual: dict[str, Any], limit: int = 3) -> list[str]:
    """One line per table that differs (empty: the two agree)."""
    found = []
    pairs = [(name, expected[name], actual[name], key) for name, key in _KEYS.items()]
    names = sorted(set(expected["entities"]) | set(actual["entities"]))
    pairs += [(f"entities {n}", expected["entities"].get(n), actual["entities"].get(n), None) for n in names]
    for name, want, got, key in pairs:
        if want is None or got is None:
            if (want is None) != (got is None) and (want if want is not None else got).height:
                found.append(f"{name}: only one side has rows")
            continue
        key = key or want.columns[0]
        want, got = want.sort(key), got.sort(key)
        if want.schema != got.schema:
            found.append(f"{name}: schema {dict(want.schema)} != {dict(got.schema)}")
        elif not want.equals(got):
            joined = want.join(got, on=key, how="full", suffix="_got", nulls_equal=True)
            lines = []
            for column in want.columns:
                if column == key:
                    continue
                other = f"{column}_got"
                mask = joined[column].ne_missing(joined[other])
                for row in joined.filter(mask).select(key, column, other).head(limit).iter_rows():
                    lines.append(f"{row[0]}: {column} {row[1]!r} != {row[2]!r}")
            found.append(f"{name} ({want.height} vs {got.height} rows): " + "; ".join(lines[:limit * 3]))
    return found

