"""Which entity types are critical: read from the entity registry file (the same YAML the job
reads, `MUTAGG_REGISTRY`; DESIGN section 3), so a node and the job never disagree on it.
Only `entity_types.<type>.criticality` is read (default `standard`, as the registry's)."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge.errors import EdgeError

LEVELS = ("critical", "important", "standard")


class CriticalityError(EdgeError):
    """The registry file cannot give the criticality map."""


def load_criticality(path: str | Path) -> dict[str, str]:
    """entity type -> critical | important | standard, from the registry at `path`."""
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CriticalityError(f"cannot read the entity registry {path}: {exc}") from exc
    types = document.get("entity_types") if isinstance(document, dict) else None
    if not isinstance(types, dict):
        raise CriticalityError(f"entity registry {path}: no `entity_types` mapping")
    criticality = {}
    for name, spec in types.items():
        level = (spec or {}).get("criticality", "standard") if isinstance(spec, dict) else None
        if level not in LEVELS:
            raise CriticalityError(f"entity registry {path}: {name}.criticality is {level!r}, "
                                   f"expected one of {', '.join(LEVELS)}")
        criticality[str(name)] = level
    return criticality
