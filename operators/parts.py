"""The parts of a flush: how the items one flush commits are cut into transactions, and what each
part's transaction records as resume offsets.

Pure: counts, sizes and per-part offsets in, index ranges and offsets out. The apply step's
hand-over (dataflows/hand_over.py) gives the parts to the commit thread in this order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PartitionKey = tuple[str, int]
Offsets = dict[PartitionKey, int]  # per input partition, an offset


@dataclass(frozen=True, slots=True)
class Part:
    """Items `start` to `end` (exclusive) of a flush, committed in one transaction."""

    start: int
    end: int
    lane: bool  # the priority lane's items only


def plan_parts(count: int, first: int, cap: int, standard_cap: int,
               shard_batch_size: int | None = None, whole: int = 0) -> list[Part]:
    """Cut `count` (> 0) items into parts, in order: the first `first` items (the priority lane's)
    in lane parts of at most `cap`, the rest in parts of at most `standard_cap` (both > 0).

    The first `whole` items go in the first part whatever its size: a release's verdicts, which
    must commit together (dataflows/apply.py `verdicts_first`).

    A shard's flush (`shard_batch_size`: its batch size) of at most two batches, while the
    throttle does not shrink parts (`cap` is the batch size), goes in one part: what a shard
    commits in its flush's first part is never published as held (operators/shard_view.py)."""
    starts = [*range(0, first, cap), *range(first, count, standard_cap)]
    if shard_batch_size is not None and cap == shard_batch_size and count <= 2 * cap:
        starts = [0]
    starts = [0, *(start for start in starts[1:] if start >= whole)]
    ends = [*starts[1:], count]
    return [Part(start, end, start < first) for start, end in zip(starts, ends, strict=True)]


def offsets_ahead(lowest: Sequence[Mapping[PartitionKey, int]]) -> list[Offsets]:
    """Per part (`lowest`: each part's lowest offset per partition), the lowest offsets of it and
    every part after it: all of them are uncommitted when it commits, so its resume offsets stay
    before them. One more entry, empty, for after the last part."""
    ahead: list[Offsets] = [{}] * (len(lowest) + 1)
    for index in range(len(lowest) - 1, -1, -1):
        ahead[index] = merge_lowest(lowest[index], ahead[index + 1])
    return ahead


def merge_lowest(*maps: Mapping[PartitionKey, int]) -> Offsets:
    """Per partition, the lowest offset any of `maps` has."""
    merged: Offsets = {}
    for offsets in maps:
        for key, offset in offsets.items():
            merged[key] = min(merged.get(key, offset), offset)
    return merged


def after_first(parts: Sequence[Part], count: int) -> tuple[int, int]:
    """The range of a flush's `count` items after its first part (empty if it has one part): what
    a shard still holds uncommitted while that part commits."""
    start = parts[1].start if len(parts) > 1 else count
    return start, count


def split_copies(start: int, end: int, copies_from: int) -> tuple[slice, slice]:
    """Items `start` to `end` of a shard's flush whose items from `copies_from` on are later
    copies: (the slice of its first copies, the slice of its later copies)."""
    return slice(start, min(end, copies_from)), slice(max(start, copies_from), end)
