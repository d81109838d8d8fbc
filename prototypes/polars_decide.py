"""The decide step vectorised with Polars, per-entity order handled in rounds (issue 22).

Scope: one entity type whose strategies are all vectorisable here (`server_wins`, `sum`,
`last_writer_wins`, `priority`; no `manual`, no custom strategy), mutations without
dependencies or headers, edge timestamps in UTC: on the bench workload that is `stock_level`,
the type with the hottest entities. Every other message of a chunk is not this engine's (in a
job it would go to the Python engine, entity by entity, since entities are independent).

A chunk: the values decoded at once (`str.json_decode` into the type's struct); the first
copy of each id kept; each mutation numbered within its entity (`rank`); then round r decides
the r-th mutation of every entity at once against the state frame, and writes the new states
back. The rounds are the cost: a chunk takes as many as its hottest entity has mutations.

What Polars cannot express exactly, and this prototype approximates (fine on the bench
workload, which has neither): a missing field and a null one decode alike, an unknown field
set to null is invisible, and which attributes a message names (and in which order, which the
provenance column keeps) is read from the raw text, not the parsed document.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from schemas.ddl import CONFLICT_COLUMNS, LEDGER_COLUMNS
from schemas.mutation import RawMessage
from schemas.registry import Registry

TYPE = "stock_level"
_SUPPORTED = {"server_wins", "sum", "last_writer_wins", "priority"}
_SQL_TYPES = {"string": pl.String, "integer": pl.Int64, "timestamp": pl.String}
_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$"
_EPOCH_MS = pl.datetime(1970, 1, 1, time_zone="UTC")
_PROV = ("pv", "pm", "pn", "pt", "pp", "pov", "pom", "seq")
_PROV_TYPES = (pl.Int64, pl.String, pl.String, pl.Int64, pl.Int64, pl.Int64, pl.String, pl.Int64)
TOMB = "#deleted"


def _iso(us: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch as `datetime.isoformat()` of a UTC datetime."""
    moment = pl.from_epoch(us, time_unit="us")
    micros = us.mod(1_000_000)
    return pl.concat_str(
        moment.dt.strftime("%Y-%m-%dT%H:%M:%S"),
        pl.when(micros != 0).then(pl.lit(".") + micros.cast(pl.String).str.zfill(6)).otherwise(pl.lit("")),
        pl.lit("+00:00"),
    )


def _json_text(column: str, kind: str) -> pl.Expr:
    """orjson of `to_json_value` for one value of a supported type (null: `null`)."""
    value = pl.col(column)
    if kind == "integer":
        rendered = value.cast(pl.String)
    else:
        rendered = pl.struct(value.alias("v")).struct.json_encode().str.slice(5).str.head(-1)
    return pl.when(value.is_null()).then(pl.lit("null")).otherwise(rendered)


class PolarsEngine:
    """`TYPE`'s mutations over successive chunks of one input partition."""

    def __init__(self, registry: Registry):
        self.entity_type = entity_type = registry.entity_types[TYPE]
        if {a.strategy for a in entity_type.attributes.values()} - _SUPPORTED:
            raise ValueError(f"{TYPE}: a strategy this prototype does not vectorise")
        self.names = sorted(entity_type.attributes)
        self.kinds = {n: entity_type.attributes[n].type for n in self.names}
        schema: dict[str, Any] = {"id": pl.String, "version": pl.Int64, "deleted": pl.Boolean}
        for slot in [*self.names, TOMB]:
            if slot != TOMB:
                schema[f"v_{slot}"] = _SQL_TYPES[self.kinds[slot]]
            for part, dtype in zip(_PROV, _PROV_TYPES):
                schema[f"{part}_{slot}"] = dtype
        self.state = pl.DataFrame(schema=schema)
        self.ledger = pl.DataFrame(schema={"mutation_id": pl.String, "status": pl.String, "reason": pl.String,
                                           "entity_id": pl.String, "version": pl.Int64, "conflict_ids": pl.String})
        self.attribute_struct = pl.Struct({n: _SQL_TYPES[self.kinds[n]] for n in self.names})
        self.rounds = 0

    # -- decode ---------------------------------------------------------------------------------

    def _decode(self, raws: list[RawMessage]) -> pl.DataFrame:
        prefix = f"{TYPE}:".encode()
        chunk = pl.DataFrame({
            "offset": [r.offset for r in raws], "key": [r.key for r in raws], "raw": [r.value for r in raws],
            "kafka_ms": [r.timestamp_ms for r in raws],
        }, schema={"offset": pl.Int64, "key": pl.Binary, "raw": pl.Binary, "kafka_ms": pl.Int64})
        chunk = chunk.filter(pl.col("key").bin.starts_with(prefix)).with_columns(pl.col("raw").cast(pl.String))
        document = pl.Struct({
            "id": pl.String, "edge_node_id": pl.String, "entity_type": pl.String, "entity_id": pl.String,
            "operation_type": pl.String, "attributes": self.attribute_struct, "base_version": pl.Int64,
            "timestamp": pl.String, "priority": pl.Int64, "dependencies": pl.List(pl.String),
        })
        decoded = chunk.with_columns(pl.col("raw").str.json_decode(document).alias("doc")).unnest("doc")
        positions = {n: pl.col("raw").str.find(f'"{n}":', literal=True) for n in self.names}
        decoded = decoded.with_columns(
            *(p.is_not_null().alias(f"has_{n}") for n, p in positions.items()),
            *(p.alias(f"at_{n}") for n, p in positions.items()),
            *(pl.col("attributes").struct.field(n).alias(f"in_{n}") for n in self.names),
        )
        edge_us = (pl.col("timestamp").str.replace(r"(Z|\+00:00)$", "")
                   .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us").dt.epoch("us"))
        decoded = decoded.with_columns(pl.min_horizontal(edge_us, pl.col("kafka_ms") * 1000).alias("ts"))
        if "timestamp" in self.kinds.values():
            decoded = decoded.with_columns(
                pl.when(pl.col(f"in_{n}").is_not_null()).then(_iso(
                    pl.col(f"in_{n}").str.replace(r"(Z|\+00:00)$", "")
                    .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us").dt.epoch("us")
                )).alias(f"in_{n}") for n in self.names if self.kinds[n] == "timestamp"
            )
        fast = (
            pl.col("id").str.len_chars().is_between(1, 128) & pl.col("edge_node_id").str.len_chars().is_between(1, 128)
            & (pl.col("entity_type") == TYPE) & pl.col("entity_id").str.len_chars().is_between(1, 256)
            & pl.col("operation_type").is_in(["CREATE", "UPDATE", "DELETE"])
            & pl.col("base_version").is_between(0, 2**62) & pl.col("priority").is_between(1, 10)
            & pl.col("timestamp").str.contains(_TS) & (pl.col("dependencies").list.len() == 0)
            & (pl.col("key").cast(pl.String) == pl.lit(f"{TYPE}:") + pl.col("entity_id"))
            & pl.col("ts").is_not_null()
        )
        decoded = decoded.filter(fast.fill_null(False))
        bonus = {"critical": 3, "important": 1, "standard": 0}[self.entity_type.criticality]
        age = pl.col("kafka_ms") * 1000 - pl.col("ts")
        return decoded.with_columns(
            (pl.col("priority") + bonus
             + pl.col("operation_type").replace_strict({"DELETE": 2, "CREATE": 1, "UPDATE": 0}, return_dtype=pl.Int64)
             + pl.when(age > 3_600_000_000).then(2).when(age > 900_000_000).then(1).otherwise(0)).alias("prio"),
        )

    # -- decide -----------------------------------------------------------------------------------

    def decide_chunk(self, topic: str, partition: int, raws: list[RawMessage], batch_id: str) -> dict[str, Any]:
        decoded = self._decode(raws)
        firsts = decoded.filter(pl.col("id").is_first_distinct()).join(
            self.ledger.select("mutation_id"), left_on="id", right_on="mutation_id", how="anti")
        firsts = firsts.with_columns(pl.col("offset").cum_count().over("entity_id").alias("rank") - 1)
        # The chunk's entities only: each round reads and rewrites these rows, not every row.
        work = self.state.join(firsts.select(pl.col("entity_id").unique().alias("id")), on="id", how="semi")
        ledger_parts, conflict_parts = [], []
        touched: set[str] = set()
        rounds = int(firsts["rank"].max()) + 1 if firsts.height else 0
        self.rounds = rounds
        for number in range(rounds):
            batch = firsts.filter(pl.col("rank") == number)
            decided, conflicts, states = self._round(batch, work)
            ledger_parts.append(decided)
            conflict_parts.append(conflicts)
            changed = states.filter(pl.col("changed")).drop("changed")
            touched.update(changed["id"].to_list())
            work = pl.concat([work.join(changed.select("id"), on="id", how="anti"), changed], how="vertical_relaxed")
        rows = work.filter(pl.col("id").is_in(sorted(touched))).sort("id")
        self.state = pl.concat([self.state.join(rows.select("id"), on="id", how="anti"), rows],
                               how="vertical_relaxed")
        ledger = pl.concat(ledger_parts) if ledger_parts else None
        outcomes = self._outcomes(decoded, ledger)
        if ledger is not None:
            self.ledger = pl.concat([self.ledger, ledger.select(self.ledger.columns)])
            ledger = self._ledger_frame(ledger, topic, partition, batch_id)
        conflict_parts = [c for c in conflict_parts if "entity_type" in c.columns]
        conflicts = pl.concat(conflict_parts, how="diagonal_relaxed") if conflict_parts else None
        if conflicts is not None:
            conflicts = conflicts.with_columns(pl.lit(batch_id).alias("batch_id"),
                                               pl.lit(None, pl.String).alias("detected_at")).select(CONFLICT_COLUMNS)
            conflicts = conflicts if conflicts.height else None
        return {"ledger": ledger, "conflicts": conflicts, "outcomes": outcomes,
                "entities": {TYPE: self._rows_frame(rows)} if rows.height else {}}

    def _round(self, batch: pl.DataFrame, work: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """Decide one mutation of every entity in `batch` against its row in `work`
        (operators/conflicts.py `decide`)."""
        names, entity_type = self.names, self.entity_type
        rows = batch.join(work, left_on="entity_id", right_on="id", how="left").with_columns(
            pl.col("version").fill_null(0), pl.col("deleted").fill_null(False))
        node, op = pl.col("edge_node_id"), pl.col("operation_type")
        base = pl.when(op == "CREATE").then(0).otherwise(pl.col("base_version"))
        rows = rows.with_columns(base.alias("base"))

        def by_other_after(slot: str) -> pl.Expr:
            return pl.col(f"pv_{slot}").is_not_null() & pl.when(pl.col(f"pn_{slot}").eq_missing(node)).then(
                pl.col(f"pov_{slot}") > pl.col("base")).otherwise(pl.col(f"pv_{slot}") > pl.col("base"))

        absent, deleted = pl.col("version") == 0, pl.col("deleted")
        update_wins = entity_type.delete_rule == "update_wins"
        rows = rows.with_columns(
            pl.when(absent & (op != "CREATE")).then(pl.lit("not_found"))
            .when(absent).then(pl.lit("create"))
            .when(pl.col("base") > pl.col("version")).then(pl.lit("future"))
            .when(deleted & (op == "DELETE")).then(pl.lit("superseded"))
            .when(deleted & (not update_wins)).then(pl.lit("dead"))
            .when(deleted).then(pl.lit("revive"))
            .when(op == "DELETE").then(pl.lit("delete"))
            .otherwise(pl.lit("update")).alias("path"),
            *(by_other_after(n).alias(f"other_{n}") for n in names),
        )
        path = pl.col("path")
        revive = path == "revive"
        # Attributes: incoming value (a sum adds, except a reviving CREATE's initial value),
        # conflict, winner, write.
        exprs = []
        for n in names:
            strategy = entity_type.attributes[n].strategy
            incoming = pl.col(f"in_{n}")
            if strategy == "sum":
                incoming = pl.when(revive & (op == "CREATE")).then(incoming).otherwise(
                    pl.when(incoming.is_null()).then(pl.col(f"v_{n}"))
                    .when(pl.col(f"v_{n}").is_null()).then(incoming).otherwise(pl.col(f"v_{n}") + incoming))
            conflict = pl.col(f"has_{n}") & pl.col(f"other_{n}") & path.is_in(["update", "revive"])
            lww = (pl.col("ts") > pl.col(f"pt_{n}").fill_null(-(2**62))) | (
                (pl.col("ts") == pl.col(f"pt_{n}")) & ((node > pl.col(f"pn_{n}").fill_null("")) | (
                    (node == pl.col(f"pn_{n}").fill_null("")) & (pl.col("id") > pl.col(f"pm_{n}").fill_null("")))))
            winner = {
                "server_wins": pl.lit("server"), "sum": pl.lit("merged"),
                "last_writer_wins": pl.when(lww).then(pl.lit("incoming")).otherwise(pl.lit("server")),
                "priority": pl.when(pl.col("prio") != pl.col(f"pp_{n}").fill_null(0)).then(
                    pl.when(pl.col("prio") > pl.col(f"pp_{n}").fill_null(0)).then(pl.lit("incoming"))
                    .otherwise(pl.lit("server"))).when(lww).then(pl.lit("incoming")).otherwise(pl.lit("server")),
            }[strategy]
            exprs += [incoming.alias(f"new_{n}"), conflict.alias(f"conflict_{n}"),
                      pl.when(conflict).then(winner).alias(f"winner_{n}")]
        rows = rows.with_columns(exprs)
        rows = rows.with_columns(
            ((path == "create") & pl.col(f"has_{n}") | path.is_in(["update", "revive"]) & pl.col(f"has_{n}")
             & (~pl.col(f"conflict_{n}") | (pl.col(f"winner_{n}") != "server"))).alias(f"write_{n}")
            for n in names
        )
        changed_any = pl.any_horizontal(pl.col(f"other_{n}") for n in names)
        writes_any = pl.any_horizontal(pl.col(f"write_{n}") for n in names)
        tomb = (pl.when(path == "create").then(pl.lit(False)).when(revive).then(pl.lit(False))
                .when((path == "delete") & (~changed_any | (not update_wins))).then(pl.lit(True)))
        rows = rows.with_columns(tomb.alias("tomb"), changed_any.alias("changed_any"))
        bump = writes_any | pl.col("tomb").is_not_null()
        rows = rows.with_columns(bump.alias("bump"))
        status = pl.when(path.is_in(["not_found", "future"])).then(pl.lit("REJECTED")).otherwise(pl.lit("APPLIED"))
        reason = (pl.when(path == "not_found").then(pl.lit("ENTITY_NOT_FOUND"))
                  .when(path == "future").then(pl.lit("FUTURE_BASE_VERSION"))
                  .when(path.is_in(["superseded", "dead"]) | ~pl.col("bump")).then(pl.lit("SUPERSEDED")))
        new_version = pl.when(pl.col("bump")).then(pl.col("version") + 1).otherwise(pl.col("version"))
        rows = rows.with_columns(status.alias("status"), reason.alias("reason"), new_version.alias("new_version"))
        conflicts = self._conflicts(rows, update_wins)
        ids = conflicts.group_by("mutation_id", maintain_order=True).agg(pl.col("conflict_id"))
        rows = rows.join(ids, left_on="id", right_on="mutation_id", how="left")
        decided = rows.select(
            pl.col("id").alias("mutation_id"), "status", "reason", "entity_id",
            pl.when(pl.col("status") == "APPLIED").then(pl.col("new_version")).alias("version"),
            pl.when(pl.col("conflict_id").is_null()).then(pl.lit("{}")).otherwise(
                pl.lit('{"') + pl.col("conflict_id").list.join('","') + pl.lit('"}')).alias("conflict_ids"),
            "edge_node_id", "operation_type", "base_version", "prio", "offset", "kafka_ms", "ts",
        )
        return decided, conflicts, self._next_states(rows)

    def _conflicts(self, rows: pl.DataFrame, update_wins: bool) -> pl.DataFrame:
        names, kinds = self.names, self.kinds
        parts = []
        common = [pl.col("entity_id"), pl.col("id").alias("mutation_id"), pl.col("edge_node_id"),
                  pl.col("base_version"), pl.col("version").alias("entity_version")]
        for n in names:
            strategy = self.entity_type.attributes[n].strategy
            hit = rows.filter(pl.col(f"conflict_{n}"))
            if not hit.height:
                continue
            result = pl.when(pl.col(f"write_{n}")).then(_json_text(f"new_{n}", kinds[n])).otherwise(
                _json_text(f"v_{n}", kinds[n]))
            parts.append(hit.select(
                pl.lit(n).alias("subject"), pl.lit(f'{{"{n}"}}').alias("attributes"), *common,
                pl.col(f"pm_{n}").alias("other_mutation_id"), pl.col(f"pn_{n}").alias("other_edge_node_id"),
                pl.lit(strategy).alias("strategy"), pl.col(f"winner_{n}").alias("winner"),
                (pl.lit(f'{{"{n}":') + _json_text(f"in_{n}", kinds[n]) + pl.lit("}")).alias("incoming_values"),
                (pl.lit(f'{{"{n}":') + _json_text(f"v_{n}", kinds[n]) + pl.lit("}")).alias("server_values"),
                (pl.lit(f'{{"{n}":') + result + pl.lit("}")).alias("result_values"),
            ))
        for path, attrs_of, other, winner in (
            (("revive", "dead"), "has", (f"pm_{TOMB}", f"pn_{TOMB}"), "incoming" if update_wins else "server"),
            (("delete",), "other", None, "server" if update_wins else "incoming"),
        ):
            hit = rows.filter(pl.col("path").is_in(path) & (pl.col("changed_any") if path == ("delete",) else True))
            if not hit.height:
                continue
            listed = pl.concat_list(
                [pl.when(pl.col(f"{attrs_of}_{n}")).then(pl.lit(n)) for n in names]).list.drop_nulls()
            if other is None:  # the latest change by another writer among the changed attributes
                latest = [pl.when(pl.col(f"pn_{n}").eq_missing(pl.col("edge_node_id"))).then(
                    pl.struct(v=pl.col(f"pov_{n}"), m=pl.col(f"pom_{n}"))).otherwise(
                    pl.struct(v=pl.col(f"pv_{n}"), m=pl.col(f"pm_{n}"))) for n in names]
                others = pl.concat_list([pl.when(pl.col(f"other_{n}")).then(s) for n, s in zip(names, latest)])
                other_id = others.list.drop_nulls().list.eval(pl.element().sort_by(
                    pl.element().struct.field("v")).struct.field("m")).list.last()
                other_cols = [other_id.alias("other_mutation_id"), pl.lit(None, pl.String).alias("other_edge_node_id")]
            else:
                other_cols = [pl.col(other[0]).alias("other_mutation_id"), pl.col(other[1]).alias("other_edge_node_id")]
            values = {k: pl.concat_str(
                pl.lit("{"), pl.concat_list([
                    pl.when(pl.col(f"{attrs_of}_{n}")).then(pl.lit(f'"{n}":') + _json_text(f"{k}_{n}", self.kinds[n]))
                    for n in names]).list.drop_nulls().list.join(","), pl.lit("}")) for k in ("in", "v")}
            parts.append(hit.select(
                pl.lit("#delete").alias("subject"),
                (pl.lit('{"') + listed.list.join('","') + pl.lit('"}')).alias("attributes"), *common, *other_cols,
                pl.lit(self.entity_type.delete_rule).alias("strategy"), pl.lit(winner).alias("winner"),
                values["in"].alias("incoming_values"), values["v"].alias("server_values"),
                pl.lit(None, pl.String).alias("result_values"),
            ))
        if not parts:
            return pl.DataFrame(schema={c: pl.String for c in ("conflict_id", "mutation_id")})
        merged = pl.concat(parts, how="diagonal_relaxed")
        ids = [conflict_id(m, s) for m, s in zip(merged["mutation_id"], merged["subject"])]
        return merged.with_columns(
            pl.Series("conflict_id", ids), pl.lit(TYPE).alias("entity_type"),
            pl.col("edge_node_id").alias("incoming_edge_node_id"), pl.lit("AUTO_RESOLVED").alias("status"),
        ).sort("mutation_id", "subject")

    def _next_states(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The state each entity is left in (operators/conflicts.py `_write`)."""
        version = pl.col("new_version")
        exprs = [pl.col("entity_id").alias("id"), version.alias("version"),
                 pl.coalesce(pl.col("tomb"), pl.col("deleted")).alias("deleted")]
        # The order of first writes (the provenance column's key order): a CREATE's names in its
        # message's order, later first writes in name order, the tombstone last.
        for position, slot in enumerate([*self.names, TOMB]):
            wrote = pl.col(f"write_{slot}") if slot != TOMB else pl.col("tomb").is_not_null()
            same = pl.col(f"pn_{slot}").eq_missing(pl.col("edge_node_id"))
            first = pl.col(f"pv_{slot}").is_null()
            order = pl.col(f"at_{slot}").cast(pl.Int64) if slot != TOMB else pl.lit(10**9)
            seq = pl.when(first).then(version * 10**10 + pl.when(pl.col("path") == "create").then(order)
                                      .otherwise(position)).otherwise(pl.col(f"seq_{slot}"))
            updated = {
                "pv": version, "pm": pl.col("id"), "pn": pl.col("edge_node_id"), "pt": pl.col("ts"),
                "pp": pl.col("prio"),
                "pov": pl.when(first).then(0).when(same).then(pl.col(f"pov_{slot}")).otherwise(pl.col(f"pv_{slot}")),
                "pom": pl.when(first).then(None).when(same).then(pl.col(f"pom_{slot}")).otherwise(pl.col(f"pm_{slot}")),
                "seq": seq,
            }
            if slot != TOMB:
                exprs.append(pl.when(wrote).then(pl.col(f"new_{slot}")).otherwise(pl.col(f"v_{slot}")).alias(f"v_{slot}"))
            for part in _PROV:
                exprs.append(pl.when(wrote).then(updated[part]).otherwise(pl.col(f"{part}_{slot}")).alias(f"{part}_{slot}"))
        exprs.append(pl.col("bump").alias("changed"))
        return rows.select(exprs)

    def _rows_frame(self, rows: pl.DataFrame) -> pl.DataFrame:
        """As sinks/entity_rows.py `rows_frame`: the key, the attributes as COPY text, version,
        deleted, and the provenance column as orjson writes it."""
        entries = []
        for slot in [*self.names, TOMB]:
            entry = pl.concat_str(
                pl.lit(f'"{slot}":['), pl.col(f"pv_{slot}").cast(pl.String), pl.lit(',"'), pl.col(f"pm_{slot}"),
                pl.lit('","'), pl.col(f"pn_{slot}"), pl.lit('","'), _iso(pl.col(f"pt_{slot}")), pl.lit('",'),
                pl.col(f"pp_{slot}").cast(pl.String), pl.lit(","), pl.col(f"pov_{slot}").cast(pl.String), pl.lit(","),
                pl.when(pl.col(f"pom_{slot}").is_null()).then(pl.lit("null")).otherwise(
                    pl.lit('"') + pl.col(f"pom_{slot}") + pl.lit('"')), pl.lit("]"))
            entries.append(pl.when(pl.col(f"pv_{slot}").is_not_null()).then(
                pl.struct(seq=pl.col(f"seq_{slot}"), text=entry)))
        provenance = pl.concat_list(entries).list.drop_nulls().list.eval(
            pl.element().sort_by(pl.element().struct.field("seq")).struct.field("text")).list.join(",")
        key = self.entity_type.key
        return rows.select(
            pl.col("id").alias(key),
            *(pl.col(f"v_{n}").cast(pl.String).alias(n) for n in self.entity_type.attributes),
            "version", "deleted", (pl.lit("{") + provenance + pl.lit("}")).alias("mutagg_provenance"),
        )

    def _ledger_frame(self, ledger: pl.DataFrame, topic: str, partition: int, batch_id: str) -> pl.DataFrame:
        return ledger.select(
            "mutation_id", "status", "reason", pl.lit(TYPE).alias("entity_type"), "entity_id", "version",
            "edge_node_id", pl.col("operation_type").alias("operation"), "base_version",
            pl.col("prio").alias("adjusted_priority"), pl.lit(batch_id).alias("batch_id"),
            pl.lit(topic).alias("kafka_topic"), pl.lit(partition, pl.Int64).alias("kafka_partition"),
            pl.col("offset").alias("kafka_offset"),
            pl.from_epoch("kafka_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("kafka_timestamp"),
            pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC").alias("edge_timestamp"),
            pl.lit(None, pl.String).alias("decided_at"), "conflict_ids", pl.lit(None, pl.String).alias("detail"),
            pl.lit(None, pl.String).alias("held_attributes"),
        ).select(LEDGER_COLUMNS)

    def _outcomes(self, decoded: pl.DataFrame, ledger: pl.DataFrame | None) -> pl.DataFrame:
        """Every message's acknowledgement; a later copy answered with its first copy's decision."""
        earlier = self.ledger.join(decoded.select(pl.col("id").alias("mutation_id")), on="mutation_id", how="semi")
        known = pl.concat([earlier, ledger.select(self.ledger.columns)]) if ledger is not None else earlier
        firsts = set(ledger["mutation_id"].to_list()) if ledger is not None else set()
        answered = decoded.select("offset", "id", "edge_node_id").join(
            known.unique("mutation_id", keep="last"), left_on="id", right_on="mutation_id", how="left")
        first_offset = pl.col("offset").min().over("id")
        return answered.select(
            "offset",
            pl.when(pl.col("id").is_in(list(firsts)) & (pl.col("offset") == first_offset)).then(pl.lit("decided"))
            .otherwise(pl.lit("duplicate")).alias("kind"),
            pl.col("id").alias("mutation_id"), "status", "reason", pl.lit(TYPE).alias("entity_type"), "entity_id",
            "version", "edge_node_id", pl.col("conflict_ids").str.strip_chars("{}").str.replace_all('"', ""),
            pl.lit(False).alias("reused"),
        ).sort("offset")


def conflict_id(mutation_id: str, subject: str) -> str:
    from operators.conflicts import conflict_id as python_conflict_id

    return python_conflict_id(mutation_id, subject)


def restrict(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """The Python engine's tables cut to this engine's scope (`TYPE`'s messages)."""
    def only(frame: pl.DataFrame | None) -> pl.DataFrame | None:
        if frame is None:
            return None
        kept = frame.filter(pl.col("entity_type") == TYPE)
        return kept if kept.height else None

    return {"ledger": only(expected["ledger"]), "conflicts": only(expected["conflicts"]),
            "outcomes": only(expected["outcomes"]),
            "entities": {k: v for k, v in expected["entities"].items() if k == TYPE}}


def covered(registry: Registry, chunks: list[list[RawMessage]]) -> int:
    """How many messages of `chunks` are this engine's (the divisor of its CPU per mutation)."""
    prefix = f"{TYPE}:".encode()
    return sum(1 for raws in chunks for r in raws if r.key and r.key.startswith(prefix))


def round_counts(registry: Registry, chunks: list[list[RawMessage]]) -> list[int]:
    engine = PolarsEngine(registry)
    counts = []
    for number, raws in enumerate(chunks):
        engine.decide_chunk("count", 0, raws, f"b{number}")
        counts.append(engine.rounds)
    return counts
