"""Vectorised validation and normalisation of batches, as DuckDB SQL compiled from the contract.

The JSON Schema (schemas/event.v2.json) and the mappings (schemas/source_mappings.json) are compiled
into SQL that, for every record at once, resolves legacy and source-specific names, checks types,
enums, patterns and required fields exactly as the schema says, applies the business rules, and
normalises units, currencies and timestamps. It runs in an in-memory DuckDB whatever the warehouse
is, so the same rules hold on DuckDB and PostgreSQL.

Two passes keep the work per record small:
1. a router reads the few fields that decide how a record is read (schema major, source, event
   type, timestamp) and dead-letters records that cannot be read at all;
2. every group of records read the same way (layout x source-specific names x event type) goes
   through a statement specialised to it: only its fields are extracted, only its payload schema
   is checked, and every rename is resolved at compile time.
Within a statement each canonical field is extracted once into columns (JSON text, JSON type,
string value) and the checks compare columns; reason lists are only built where a cheap OR of the
conditions says a record has something wrong.

`reference.py` does the same one record at a time with `jsonschema`; tests hold the two to the same
verdicts and values.

`validate_batches` first lets the lean path (`fast_path.py`) take the records it can show valid
with cheaper checks (most records of most batches); these statements judge the rest, and every
record that has something wrong with it, so every reason still comes from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub_pipelines.events import contract

_JSON_TYPES = {
    "string": ("VARCHAR",),
    "number": ("BIGINT", "UBIGINT", "DOUBLE", "HUGEINT"),
    "integer": ("BIGINT", "UBIGINT", "HUGEINT"),
    "boolean": ("BOOLEAN",),
    "object": ("OBJECT",),
    "array": ("ARRAY",),
    "null": ("NULL",),
}
_NUMBER = _JSON_TYPES["number"]

# The columns every validated record has, in order, with their SQL types.
OUTPUT_COLUMNS: dict[str, str] = {
    "batch_idx": "INTEGER",
    "rec_idx": "BIGINT",
    "raw_text": "VARCHAR",
    "reasons": "STRUCT(code VARCHAR, field VARCHAR, message VARCHAR)[]",
    "is_valid": "BOOLEAN",
    "event_id": "VARCHAR",
    "event_time": "TIMESTAMPTZ",
    "tenant_id": "VARCHAR",
    "source_module": "VARCHAR",
    "event_type": "VARCHAR",
    "schema_version": "VARCHAR",
    "schema_major": "INTEGER",
    "correlation_id": "VARCHAR",
    "severity": "VARCHAR",
    "environment": "VARCHAR",
    "tags": "VARCHAR",
    "metric_name": "VARCHAR",
    "metric_value": "DOUBLE",
    "unit": "VARCHAR",
    **{dim: "VARCHAR" for dim in contract.DIMENSIONS},
    "cost_type": "VARCHAR",
    "cost_usd": "DOUBLE",
    "threat_type": "VARCHAR",
    "policy_id": "VARCHAR",
    "policy_category": "VARCHAR",
    "outcome": "VARCHAR",
    "payload": "VARCHAR",
}


REASON_TYPE = pa.struct([("code", pa.string()), ("field", pa.string()), ("message", pa.string())])
_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "DOUBLE": pa.float64(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "STRUCT(code VARCHAR, field VARCHAR, message VARCHAR)[]": pa.list_(REASON_TYPE),
}


def sql_str(value: str) -> str:
    """A SQL string literal for a constant taken from the contract (never from data)."""
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values) -> str:
    return "[" + ", ".join(sql_str(v) for v in values) + "]"


def _in(expr: str, values) -> str:
    return f"{expr} IN ({', '.join(sql_str(v) for v in values)})"


def _json_path(parts: list[str]) -> str:
    return sql_str("$." + ".".join(f'"{p}"' for p in parts))


def _reason(code: str, field_sql: str, message_sql: str) -> str:
    return f"{{'code': {sql_str(code)}, 'field': {field_sql}, 'message': {message_sql}}}"


@dataclass(frozen=True)
class Group:
    """How a record is read: legacy layout or not, which source's own names apply (only sources
    with a mapping), and which payload schema applies (only valid event types)."""

    legacy: bool
    source: str | None
    etype: str | None


@dataclass(frozen=True)
class _Value:
    """SQL expressions for one JSON value: its JSON text (NULL when absent), JSON type, string
    value (only when it is a string) and scalar text (the text of any scalar: 12, true, abc)."""

    v: str
    t: str
    s: str
    text: str

    @staticmethod
    def of(expr: str) -> _Value:
        t = f"json_type({expr})"
        text = f"json_extract_string({expr}, '$')"
        return _Value(expr, t, f"CASE WHEN {t} = 'VARCHAR' THEN {text} END", text)


@dataclass(frozen=True)
class _Check:
    cond: str  # SQL boolean: true when the reason applies
    code: str
    field: str
    message: str  # SQL expression giving the message text


@dataclass(frozen=True)
class _ListCheck:
    """A check that yields a variable number of reasons (one per offending key or item)."""

    expr: str  # SQL expression of type STRUCT(code, field, message)[]
    maybe: str = "true"  # cheap SQL boolean, false only where `expr` is surely empty


def _reason_list(checks: list[_Check | _ListCheck]) -> str:
    """SQL for the list of reasons that apply. Most records have none, so the list is only built
    where a cheap OR of the conditions says it could be non-empty."""
    scalars = [c for c in checks if isinstance(c, _Check)]
    lists = [c for c in checks if isinstance(c, _ListCheck)]
    if not checks:
        return "[]"
    items = [
        f"CASE WHEN coalesce({c.cond}, false) THEN {_reason(c.code, sql_str(c.field), c.message)} END"
        for c in scalars
    ]
    built = f"list_filter([{', '.join(items)}], lambda r: r IS NOT NULL)" if items else "[]"
    if lists:
        built = "list_concat(" + ", ".join([built, *(f"coalesce({c.expr}, [])" for c in lists)]) + ")"
    maybe = " OR ".join(
        [f"coalesce({c.cond}, false)" for c in scalars] + [f"coalesce({c.maybe}, false)" for c in lists]
    )
    return f"CASE WHEN {maybe} THEN {built} ELSE [] END"


class _Compiler:
    """Compiles the schema for one Group (renames resolved at compile time), or for any record
    when group is None (renames guarded by SQL conditions on is_legacy, src and etype)."""

    def __init__(self, group: Group | None) -> None:
        self.group = group
        self.schema = contract.event_schema()
        self.mappings = contract.source_mappings()
        self.paths: list[str] = []  # JSON paths extracted from the record in one parse
        self._path_index: dict[str, int] = {}
        # Canonical field columns by level: level n may only use columns of levels < n. Each has
        # a JSON text expression and, where cheaper than deriving them, type and text expressions.
        self.columns: dict[str, tuple[int, dict[str, str]]] = {}

    # -- raw JSON access ------------------------------------------------------------------------
    def raw_index(self, dotted: str) -> int:
        """1-based index of a dotted path in the lists extracted from the record."""
        if dotted not in self._path_index:
            self._path_index[dotted] = len(self.paths)
            self.paths.append("$." + ".".join(f'"{p}"' for p in dotted.split(".")))
        return self._path_index[dotted] + 1

    def raw(self, dotted: str) -> str:
        """JSON text at a dotted path of the record as sent (SQL NULL when absent). In a group's
        statement this is a token: only the paths whose JSON text is really used are extracted."""
        if self.group is not None:
            return f"⟦x:{self.raw_index(dotted)}⟧"
        return f"x[{self.raw_index(dotted)}]"

    def present(self, dotted: str) -> str:
        """SQL boolean: the record has this path (JSON null counts as present)."""
        if self.group is not None:
            return f"(xt[{self.raw_index(dotted)}] IS NOT NULL)"
        return f"({self.raw(dotted)} IS NOT NULL)"

    def renames(self, dotted: str) -> list[tuple[str, str]]:
        """(old dotted path, guard SQL) pairs that map onto a canonical dotted path, in the order
        `reference.to_canonical` applies them: legacy layout first, then the source's own names.
        For a Group, pairs that cannot apply are left out and the guard of the others is 'true'."""
        legacy = self.mappings["legacy"]
        parts = dotted.split(".")
        candidates: list[tuple[str, bool | None, str | None, str | None]] = []  # old, legacy, src, etype
        if len(parts) == 1:
            candidates += [
                (old, True, None, None) for old, new in legacy["envelope"].items() if new == dotted
            ]
            for source, spec in self.mappings["sources"].items():
                candidates += [
                    (old, None, source, None) for old, new in spec["envelope"].items() if new == dotted
                ]
        elif len(parts) == 2 and parts[0] == "payload":
            for etype, names in legacy["payload"].items():
                candidates += [
                    (f"payload.{old}", True, None, etype) for old, new in names.items() if new == parts[1]
                ]
            for source, spec in self.mappings["sources"].items():
                for etype, names in spec["payload"].items():
                    candidates += [
                        (f"payload.{old}", None, source, etype)
                        for old, new in names.items()
                        if new == parts[1]
                    ]
        out = []
        for old, is_legacy, source, etype in candidates:
            if self.group is not None:
                g = self.group
                if (
                    (is_legacy and not g.legacy)
                    or (source and source != g.source)
                    or (etype and etype != g.etype)
                ):
                    continue
                out.append((old, "true"))
                continue
            guard = ["is_legacy"] if is_legacy else []
            guard += [f"src = {sql_str(source)}"] if source else []
            guard += [f"etype = {sql_str(etype)}"] if etype else []
            out.append((old, " AND ".join(guard)))
        return out

    @staticmethod
    def column(dotted: str) -> str:
        return "f_" + re.sub(r"[^a-z0-9]", "_", dotted.lower())

    def define(self, dotted: str, level: int, v: str, t: str | None = None, text: str | None = None) -> None:
        exprs = {"v": v}
        if t is not None:
            exprs |= {"t": t, "text": text}
        self.columns[dotted] = (level, exprs)

    def rewrite(self, dotted: str, level: int, make_expr: Callable[[_Value], str]) -> None:
        """Replace a canonical field by a rewritten one; the value as sent stays available as
        `<dotted>__sent` for the rewrite to use."""
        self.canon(dotted)
        self.columns[dotted + "__sent"] = self.columns.pop(dotted)
        # Inside the layers the type and string columns do not exist yet: compute them inline.
        self.define(dotted, level, make_expr(_Value.of(f"v_{self.column(dotted + '__sent')}")))

    def _define_from_lists(self, dotted: str, candidates: list[tuple[int, int]]) -> None:
        """A column read from the record's path lists: candidates are (where presence is
        tested, where the value is) pairs, the first present one wins (renames: the canonical
        name first, then old names)."""
        if len(candidates) == 1:
            ((_, i),) = candidates
            self.define(dotted, 1, f"⟦x:{i}⟧", f"xt[{i}]", f"xs[{i}]")
            return

        def pick(item: str) -> str:
            return (
                "CASE "
                + " ".join(f"WHEN xt[{p}] IS NOT NULL THEN {item.format(i=i)}" for p, i in candidates)
                + " END"
            )

        self.define(dotted, 1, pick("⟦x:{i}⟧"), pick("xt[{i}]"), pick("xs[{i}]"))

    def canon(self, dotted: str) -> _Value:
        """The canonical field after renames, as columns (defined on first use)."""
        name = self.column(dotted)
        if dotted not in self.columns:
            parts = dotted.split(".")
            if len(parts) > 2 and self.group is not None:
                # Nothing is renamed below the payload's own fields, but a renamed parent must be
                # followed: payload.labels.model is payload.dimensions.model of a legacy record.
                parent, rest = ".".join(parts[:2]), ".".join(parts[2:])
                parents = [parent] + [old for old, _ in self.renames(parent)]
                self._define_from_lists(
                    dotted, [(self.raw_index(p), self.raw_index(f"{p}.{rest}")) for p in parents]
                )
            elif len(parts) > 2:
                parent = self.canon(".".join(parts[:2])).v
                self.define(dotted, 3, f"json_extract({parent}, {_json_path(parts[2:])})")
            elif self.group is not None:
                # Renames are known: type and text come from the one-parse lists of the record.
                names = [dotted] + [old for old, _ in self.renames(dotted)]
                self._define_from_lists(dotted, [(self.raw_index(n), self.raw_index(n)) for n in names])
            else:
                candidates = [self.raw(dotted)]
                for old, guard in self.renames(dotted):
                    candidates.append(f"CASE WHEN {guard} THEN {self.raw(old)} END")
                expr = candidates[0] if len(candidates) == 1 else f"coalesce({', '.join(candidates)})"
                self.define(dotted, len(parts), expr)
        return _Value(f"v_{name}", f"t_{name}", f"s_{name}", f"text_{name}")

    # -- schema compilation ---------------------------------------------------------------------
    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    def compile_node(self, node: dict[str, Any], path: str, val: _Value) -> list[_Check | _ListCheck]:
        """Checks for a present value against a schema node, reported as jsonschema would."""
        node = self.resolve(node)
        if "oneOf" in node:
            # Only the nullable form [X, {"type": "null"}] is used: jsonschema reports a failure
            # of X as one oneOf error at this path, so the compiled form does too.
            (inner,) = [a for a in map(self.resolve, node["oneOf"]) if a.get("type") != "null"]
            conds = [c.cond for c in self.compile_node(inner, path, val) if isinstance(c, _Check)]
            return [
                _Check(
                    f"{val.t} <> 'NULL' AND ({' OR '.join(f'({c})' for c in conds)})",
                    "invalid_value",
                    path,
                    f"'field {path} has an invalid value ' || left(coalesce({val.text}, lower({val.t})), 80)",
                )
            ]
        checks: list[_Check | _ListCheck] = []
        if "type" in node:
            types = [node["type"]] if isinstance(node["type"], str) else node["type"]
            allowed = sorted({t for name in types for t in _JSON_TYPES[name]})
            checks.append(
                _Check(
                    f"NOT {_in(val.t, allowed)}",
                    "wrong_type",
                    path,
                    f"'field {path} must be {' or '.join(types)}, got ' || lower({val.t})",
                )
            )
        if "enum" in node:
            checks.append(
                _Check(
                    f"NOT coalesce({_in(val.s, node['enum'])}, false)",
                    "invalid_value",
                    path,
                    f"'field {path} must be one of {', '.join(node['enum'])}; got ' || left(coalesce({val.text}, lower({val.t})), 80)",
                )
            )
        string_rules = []
        if "pattern" in node:
            string_rules.append(f"NOT regexp_matches({val.s}, {sql_str(node['pattern'])})")
        if "minLength" in node:
            string_rules.append(f"length({val.s}) < {int(node['minLength'])}")
        if "maxLength" in node:
            string_rules.append(f"length({val.s}) > {int(node['maxLength'])}")
        if string_rules:
            checks.append(
                _Check(
                    f"{val.s} IS NOT NULL AND ({' OR '.join(string_rules)})",
                    "invalid_value",
                    path,
                    f"'field {path} has an invalid value ' || left(coalesce({val.text}, lower({val.t})), 80)",
                )
            )
        number = f"TRY_CAST({val.text} AS DOUBLE)"
        number_rules = [f"{number} < {float(node['minimum'])!r}"] if "minimum" in node else []
        number_rules += [f"{number} > {float(node['maximum'])!r}"] if "maximum" in node else []
        if number_rules:
            checks.append(
                _Check(
                    f"{_in(val.t, _NUMBER)} AND ({' OR '.join(number_rules)})",
                    "invalid_value",
                    path,
                    f"'field {path} is out of range: ' || left(coalesce({val.text}, lower({val.t})), 80)",
                )
            )
        if {"properties", "required", "additionalProperties"} & node.keys():
            checks += self.compile_object(node, path, val)
        if "items" in node:
            checks.append(self.compile_items(node["items"], path, val))
        return checks

    def compile_object(self, node: dict[str, Any], path: str, val: _Value) -> list[_Check | _ListCheck]:
        is_object = f"{val.t} = 'OBJECT'"
        checks: list[_Check | _ListCheck] = []
        for name in node.get("required", []):
            child = f"{path}.{name}" if path else name
            checks.append(
                _Check(
                    f"{is_object} AND {self.canon(child).t} IS NULL",
                    "missing_field",
                    child,
                    sql_str(f"required field {child} is missing"),
                )
            )
        for name, child_node in node.get("properties", {}).items():
            child = f"{path}.{name}" if path else name
            cv = self.canon(child)
            present = f"{is_object} AND {cv.t} IS NOT NULL"
            for check in self.compile_node(child_node, child, cv):
                if isinstance(check, _Check):
                    checks.append(
                        _Check(f"{present} AND ({check.cond})", check.code, check.field, check.message)
                    )
                else:
                    checks.append(
                        _ListCheck(
                            f"CASE WHEN {present} THEN {check.expr} END", f"{present} AND {check.maybe}"
                        )
                    )
        extra = node.get("additionalProperties", True)
        if extra is False:
            checks.append(self.compile_unexpected_keys(node, path, val))
        elif isinstance(extra, dict):
            checks.append(self.compile_map_values(extra, path, val))
        return checks

    def compile_unexpected_keys(self, node: dict[str, Any], path: str, val: _Value) -> _ListCheck:
        assert path == "", "only the envelope is closed to extra fields"
        known = list(node["properties"])
        renamed_away = [
            f"CASE WHEN {guard} AND NOT {self.present(name)} AND {self.present(old)} THEN {sql_str(old)} END"
            for name in known
            for old, guard in self.renames(name)
        ]
        renamed = f"[{', '.join(renamed_away)}]" if renamed_away else "[]"
        reason = _reason("unexpected_field", "k", "'unexpected field ' || k")
        # Every key is either a known field or the old name of one, so there can only be extra
        # keys where the record has more keys than known fields present.
        present = " + ".join(f"({self.canon(name).t} IS NOT NULL)::INTEGER" for name in known)
        return _ListCheck(
            f"list_transform(list_filter(json_keys({val.v}), lambda k: NOT list_contains({_sql_list(known)}, k)"
            f" AND NOT coalesce(list_contains({renamed}, k), false)), lambda k: {reason})",
            f"len(json_keys({val.v})) > ({present})",
        )

    def compile_map_values(self, value_node: dict[str, Any], path: str, val: _Value) -> _ListCheck:
        types = self.resolve(value_node)["type"]
        types = [types] if isinstance(types, str) else types
        allowed = sorted({t for name in types for t in _JSON_TYPES[name]})
        value_type = f"json_type({val.v}, '$.\"' || replace(replace(k, '\\', '\\\\'), '\"', '\\\"') || '\"')"
        field = f"{sql_str(path + '.')} || k"
        reason = _reason("wrong_type", field, f"'field ' || {field} || ' must be {' or '.join(types)}'")
        maybe = "true"
        # Cheap pre-filters on the map's JSON text; they may fire where nothing is wrong (a colon
        # or bracket inside a string), never the other way round.
        scalars = {t for name in ("string", "number", "boolean", "null") for t in _JSON_TYPES[name]}
        maybe = "true"
        if scalars <= set(allowed) and not {"OBJECT", "ARRAY"} & set(allowed):
            # Only nested values are wrong: one needs a bracket after the map's opening one.
            maybe = f"regexp_matches(substr({val.v}, 2), '[\\[{{]')"
        elif set(allowed) == {"VARCHAR"}:
            # Only strings are right: a wrong value follows a key's colon without a quote.
            maybe = f"regexp_matches({val.v}, ':\\s*[^\"\\s]')"
        return _ListCheck(
            f"CASE WHEN {val.t} = 'OBJECT' THEN list_transform("
            f"list_filter(json_keys({val.v}), lambda k: NOT {_in(value_type, allowed)}), lambda k: {reason}) END",
            maybe,
        )

    def compile_items(self, item_node: dict[str, Any], path: str, val: _Value) -> _ListCheck:
        item = _Value.of(f"json_extract({val.v}, '$[' || i || ']')")
        field = f"{sql_str(path + '.')} || i"
        message = f"'item ' || i || ' of {path} is invalid'"
        parts = [
            f"CASE WHEN {check.cond} THEN {_reason(check.code, field, message)} END"
            for check in self.compile_node(item_node, "", item)
            if isinstance(check, _Check)
        ]
        return _ListCheck(
            f"CASE WHEN {val.t} = 'ARRAY' THEN flatten(list_transform(range(json_array_length({val.v})::BIGINT),"
            f" lambda i: list_filter([{', '.join(parts)}], lambda r: r IS NOT NULL))) END"
        )

    def layers(self, source: str, uses: str = "") -> tuple[str, str]:
        """CTEs computing every canonical column level by level, then the types and strings not
        computed with them; returns (ctes, name of the last one).

        A JSON-text column (v_...) is only computed when `uses` (the rest of the statement) or
        another computed column refers to it: most fields need only their type and text."""
        exprs = {self.column(d): e for d, (_, e) in self.columns.items()}
        refs = re.compile(r"\bv_(f_[a-z0-9_]+)")
        needed = set(refs.findall(uses))
        needed |= {n for n, e in exprs.items() if "t" not in e}  # typed below from their JSON text
        needed |= {m for e in exprs.values() for part in ("t", "text") for m in refs.findall(e.get(part, ""))}
        frontier = set(needed)
        while frontier:
            frontier = {m for n in frontier for m in refs.findall(exprs.get(n, {}).get("v", ""))} - needed
            needed |= frontier
        ctes = []
        previous = source
        for level in sorted({level for level, _ in self.columns.values()}):
            cols = []
            for dotted, (lvl, e) in self.columns.items():
                if lvl != level:
                    continue
                n = self.column(dotted)
                if n in needed:
                    cols.append(f"{e['v']} AS v_{n}")
                if "t" in e:
                    cols.append(f"{e['t']} AS t_{n}")
                    cols.append(f"CASE WHEN {e['t']} = 'VARCHAR' THEN {e['text']} END AS s_{n}")
                    cols.append(f"{e['text']} AS text_{n}")
            if cols:
                ctes.append(
                    f"level{level} AS (SELECT *,\n        "
                    + ",\n        ".join(cols)
                    + f"\n    FROM {previous})"
                )
                previous = f"level{level}"
        typed = ",\n        ".join(
            f"json_type(v_{n}) AS t_{n}, CASE WHEN json_type(v_{n}) = 'VARCHAR' THEN json_extract_string(v_{n}, '$') END AS s_{n},"
            f" json_extract_string(v_{n}, '$') AS text_{n}"
            for n, e in exprs.items()
            if "t" not in e
        )
        if typed:
            ctes.append(f"typed AS (SELECT *,\n        {typed}\n    FROM {previous})")
            previous = "typed"
        return ",\n".join(ctes), previous

    def resolve_tokens(self, sql: str) -> tuple[str, list[str]]:
        """Replace the ⟦x:i⟧ tokens left in a finished statement by positions in the list of JSON
        texts actually extracted; returns (sql, those paths)."""
        used = sorted({int(i) for i in re.findall(r"⟦x:(\d+)⟧", sql)})
        position = {i: n + 1 for n, i in enumerate(used)}
        sql = re.sub(r"⟦x:(\d+)⟧", lambda m: f"x[{position[int(m.group(1))]}]", sql)
        return sql, [self.paths[i - 1] for i in used]


TERMINAL_CODES = ("invalid_utf8", "malformed_json", "not_an_object", "unsupported_schema_version")


def _epoch_millis_to_text(sent: _Value) -> str:
    """Legacy layouts may send epoch milliseconds; the reference turns them into ISO text first."""
    millis = f"TRY_CAST(json_extract_string({sent.v}, '$') AS DOUBLE)"
    return (
        f"CASE WHEN is_legacy AND {_in(sent.t, _NUMBER)} AND {millis} BETWEEN 0 AND 32503680000000"
        f" THEN to_json(strftime(make_timestamp(({millis} * 1000)::BIGINT), '%Y-%m-%dT%H:%M:%S.%f+00:00'))"
        f" ELSE {sent.v} END"
    )


@cache
def router_sql() -> str:
    """Pass 1 over `records` (batch_idx, rec_idx, raw, utf8_ok, row_id): how each record is read,
    its event time, and the reason it cannot be read at all, if it cannot; in row_id order."""
    c = _Compiler(None)
    schema = c.schema
    sv = c.raw("schema_version")
    legacy_majors = ", ".join(str(m) for m in c.mappings["legacy"]["majors"])
    accepted = ", ".join(str(m) for m in contract.ACCEPTED_MAJORS)

    def first_string(dotted: str) -> str:
        # source_module and event_type decide which renames apply, so only the legacy layout's
        # names are considered for them.
        names = [c.raw(dotted)] + [
            f"CASE WHEN is_legacy THEN {c.raw(old)} END" for old, g in c.renames(dotted) if g == "is_legacy"
        ]
        expr = f"coalesce({', '.join(names)})"
        return f"CASE WHEN json_type({expr}) = 'VARCHAR' THEN json_extract_string({expr}, '$') END"

    src, etype = first_string("source_module"), first_string("event_type")
    c.rewrite("timestamp", 2, _epoch_millis_to_text)
    layers, last = c.layers("sourced")
    ts_pattern = sql_str(schema["properties"]["timestamp"]["pattern"])
    mapped_sources = _sql_list(c.mappings["sources"])
    semver = sql_str(schema["properties"]["schema_version"]["pattern"])
    return f"""
WITH parsed AS (
    SELECT *, CASE WHEN utf8_ok AND json_valid(raw) THEN json_type(raw) END AS root_type FROM records
), extracted AS (
    SELECT *, CASE WHEN root_type = 'OBJECT' THEN json_extract(raw, {_sql_list(c.paths)}) END AS x FROM parsed
), versioned AS (
    SELECT *,
        CASE WHEN json_type({sv}) = 'VARCHAR' AND regexp_matches(json_extract_string({sv}, '$'), {semver})
             THEN TRY_CAST(split_part(json_extract_string({sv}, '$'), '.', 1) AS INTEGER) END AS major
    FROM extracted
), layout AS (
    SELECT *, coalesce(major IN ({legacy_majors}), false) AS is_legacy FROM versioned
), sourced AS (
    SELECT *, {src} AS src, {etype} AS etype FROM layout
), {layers}
SELECT
    row_id, root_type, major, is_legacy, src, etype,
    v_f_timestamp AS ts_json,
    s_f_timestamp AS ts_text,
    CASE WHEN regexp_matches(s_f_timestamp, {
        ts_pattern
    }) THEN TRY_CAST(s_f_timestamp AS TIMESTAMPTZ) END AS event_time,
    CASE WHEN list_contains({mapped_sources}, src) THEN src END AS group_source,
    CASE WHEN list_contains({_sql_list(contract.EVENT_TYPES)}, etype) THEN etype END AS group_etype,
    CASE
        WHEN NOT utf8_ok THEN [{_reason("invalid_utf8", "''", "'record is not valid UTF-8 text'")}]
        WHEN root_type IS NULL THEN [{_reason("malformed_json", "''", "'record is not valid JSON'")}]
        WHEN root_type <> 'OBJECT' THEN [{
        _reason("not_an_object", "''", "'record is a JSON ' || lower(root_type) || ', expected an object'")
    }]
        WHEN major NOT IN ({accepted}) THEN [{
        _reason(
            "unsupported_schema_version",
            "'schema_version'",
            f"'schema_version ' || json_extract_string({sv}, '$') || ' has major ' || major || '; accepted majors are {accepted}'",
        )
    }]
    END AS terminal_reasons
FROM {last}
ORDER BY row_id
"""


@cache
def group_sql(group: Group) -> str:
    """Pass 2 for one group: reads `group_records` (the group's records with the router's columns
    and their batch's newest event time as batch_newest) and returns OUTPUT_COLUMNS."""
    c = _Compiler(group)
    schema = c.schema
    c.define("timestamp", 1, "ts_json")  # resolved, and epoch milliseconds converted, by the router

    outcome_maps = [
        (old, new)
        for source, spec in c.mappings["sources"].items()
        if source == group.source
        for target, mapping in spec.get("values", {}).items()
        if target == f"{group.etype}.outcome"
        for old, new in mapping.items()
    ]
    if outcome_maps:
        cases = " ".join(f"WHEN {sql_str(old)} THEN {sql_str(new)}" for old, new in outcome_maps)
        c.rewrite(
            "payload.outcome", 3, lambda sent: f"coalesce(to_json(CASE {sent.s} {cases} END), {sent.v})"
        )

    # The record's own JSON type is already a column: checks must not re-parse the whole record.
    record = _Value("raw_text", "root_type", "NULL", "NULL")
    checks = c.compile_node({k: v for k, v in schema.items() if k != "allOf"}, "", record)
    payload = c.canon("payload")
    for branch in schema["allOf"]:
        if branch["if"]["properties"]["event_type"]["const"] == group.etype:
            for check in c.compile_node(branch["then"]["properties"]["payload"], "payload", payload):
                if isinstance(check, _Check):
                    checks.append(
                        _Check(
                            f"{payload.t} IS NOT NULL AND ({check.cond})",
                            check.code,
                            check.field,
                            check.message,
                        )
                    )
                else:
                    checks.append(
                        _ListCheck(
                            f"CASE WHEN {payload.t} IS NOT NULL THEN {check.expr} END",
                            f"{payload.t} IS NOT NULL AND {check.maybe}",
                        )
                    )
    schema_reasons = _reason_list(checks)

    valued, normal, rules, payload_norm, out = normalisation(c, group, payload)
    rule_reasons = _reason_list([_Check(*rule) for rule in rules])
    assert list(out) == list(OUTPUT_COLUMNS)
    out_cols = ",\n    ".join(
        f"CAST({expr} AS {OUTPUT_COLUMNS[name]}) AS {name}" for name, expr in out.items()
    )

    # Every c.raw()/c.canon() call is above this line, so the path and column lists are complete.
    rest = f"""{valued_and_normal(valued, normal, "__LAST__")}, judged AS (
    SELECT *, {schema_reasons} AS schema_reasons FROM normal
), reasoned AS (
    SELECT *,
        list_concat(schema_reasons, {rule_reasons}) AS reasons,
        {payload_norm} AS payload_norm
    FROM judged
)
SELECT
    {out_cols}
FROM reasoned
"""
    layers, last = c.layers("base", uses=rest)
    sql, json_paths = c.resolve_tokens(f"{layers}, {rest.replace('__LAST__', last)}")
    paths = _sql_list(c.paths)
    json_texts = f"json_extract(raw_text, {_sql_list(json_paths)}) AS x," if json_paths else ""
    # One parse each for the types and the texts of every path; JSON text only where needed.
    return f"""
WITH base AS (
    SELECT *,
        {json_texts}
        json_type(raw_text, {paths}) AS xt,
        json_extract_string(raw_text, {paths}) AS xs
    FROM group_records
), {sql}"""


def normalisation(
    c: _Compiler, group: Group, payload: _Value
) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str, str, str]], str, dict[str, str]]:
    """What a group's records become, shared by the full statement and the lean path
    (fast_path.py) so both compute every value with the same expressions: the columns read
    (`valued`), the normalised ones (`normal`), the business rules as (condition, code, field,
    message), the canonical payload and the OUTPUT_COLUMNS expressions.

    The expressions use the columns every statement provides: batch_idx, rec_idx, raw_text,
    reasons, event_time, ts_text, batch_newest, src, etype, major and the $received_at parameter."""
    schema = c.schema
    sv = c.raw("schema_version")
    etype = group.etype

    def number(dotted: str) -> str:
        val = c.canon(dotted)
        return f"CASE WHEN {_in(val.t, _NUMBER)} THEN TRY_CAST({val.text} AS DOUBLE) END"

    valued: dict[str, str] = {"payload_sent": payload.v, "env_severity": c.canon("severity").s}
    normal: dict[str, str] = {}
    rules: list[tuple[str, str, str, str]] = []
    if etype == "telemetry":
        valued |= {
            "metric_name": c.canon("payload.metric_name").s,
            "metric_value_sent": number("payload.metric_value"),
            "unit_sent": c.canon("payload.unit").s,
        }
        factor = " ".join(f"WHEN {sql_str(u)} THEN {f!r}" for u, (_, f) in contract.UNIT_FACTORS.items())
        canonical_unit = " ".join(
            f"WHEN {sql_str(u)} THEN {sql_str(cu)}" for u, (cu, _) in contract.UNIT_FACTORS.items()
        )
        metric_units = " ".join(
            f"WHEN {sql_str(m)} THEN {sql_str(u)}" for m, u in contract.METRIC_UNITS.items()
        )
        normal |= {
            "metric_value_norm": f"metric_value_sent * (CASE lower(unit_sent) {factor} END)",
            "unit_norm": f"CASE lower(unit_sent) {canonical_unit} END",
            "expected_unit": f"CASE metric_name {metric_units} END",
        }
        rules += [
            ("metric_value_sent < 0", "negative_metric_value", "payload.metric_value",
             "'metric value ' || metric_value_sent || ' is negative'"),
            ("unit_sent IS NOT NULL AND unit_norm IS NULL", "unknown_unit", "payload.unit",
             "'unit ' || unit_sent || ' is not a known unit'"),
            ("unit_norm <> expected_unit", "unit_mismatch", "payload.unit",
             "'unit ' || unit_sent || ' measures ' || unit_norm || ' but metric ' || metric_name || ' is in ' || expected_unit"),
        ]  # fmt: skip
    if etype == "cost":
        valued |= {"amount_sent": number("payload.amount"), "currency": c.canon("payload.currency").s}
        fx = " ".join(f"WHEN {sql_str(cur)} THEN {rate!r}" for cur, rate in contract.FX_TO_USD.items())
        normal |= {"cost_usd": f"amount_sent * (CASE currency {fx} END)"}
        rules += [
            ("amount_sent <= 0", "non_positive_cost", "payload.amount", "'cost amount ' || amount_sent || ' is not positive'"),
            ("amount_sent IS NOT NULL AND regexp_matches(currency, '^[A-Z]{3}$') AND cost_usd IS NULL",
             "unknown_currency", "payload.currency", "'currency ' || currency || ' has no conversion rate to USD'"),
        ]  # fmt: skip
    if etype == "security":
        valued |= {"sec_severity": c.canon("payload.severity").s}
        ranks = " ".join(f"WHEN {sql_str(s)} THEN {i}" for i, s in enumerate(contract.SEVERITIES))
        normal |= {"sec_rank": f"CASE sec_severity {ranks} END"}
        min_rank = contract.severity_rank(contract.MIN_SECURITY_SEVERITY)
        rules += [
            (f"sec_rank < {min_rank}", "security_severity_below_warning", "payload.severity",
             "'security detections must be warning or above, got ' || sec_severity"),
        ]  # fmt: skip
    if etype == "policy":
        valued |= {"outcome": c.canon("payload.outcome").s}

    max_age_s = int(contract.MAX_EVENT_AGE.total_seconds())
    future_s = int(contract.MAX_FUTURE_SKEW.total_seconds())
    ts_pattern = sql_str(schema["properties"]["timestamp"]["pattern"])
    iso = "strftime(event_time, '%Y-%m-%dT%H:%M:%SZ')"
    rules = [
        (f"regexp_matches(ts_text, {ts_pattern}) AND event_time IS NULL", "invalid_value", "timestamp",
         "'timestamp ' || ts_text || ' is not a valid date and time'"),
        (f"event_time > $received_at + INTERVAL {future_s} SECOND", "timestamp_in_future", "timestamp",
         f"'timestamp ' || {iso} || ' is more than {future_s // 3600} hour ahead of receipt'"),
        (f"event_time < coalesce(batch_newest, $received_at) - INTERVAL {max_age_s} SECOND", "timestamp_too_old",
         "timestamp", f"'timestamp ' || {iso} || ' is more than {max_age_s // 86400} days older than the newest event of its batch'"),
        *rules,
    ]  # fmt: skip

    payload_norm = _payload_patch(c, group, payload)
    dims = _dimension_columns(c, etype)
    out = {
        "batch_idx": "batch_idx",
        "rec_idx": "rec_idx",
        "raw_text": "raw_text",
        "reasons": "reasons",
        "is_valid": "len(reasons) = 0",
        "event_id": f"lower({c.canon('event_id').s})",
        "event_time": "event_time",
        "tenant_id": c.canon("tenant_id").s,
        "source_module": "src",
        "event_type": "etype",
        "schema_version": f"json_extract_string({sv}, '$')",
        "schema_major": "major",
        "correlation_id": c.canon("correlation_id").s,
        "severity": "sec_severity" if etype == "security" else "env_severity",
        "environment": c.canon("environment").s,
        "tags": f"CASE WHEN {c.canon('tags').t} = 'OBJECT' THEN {c.canon('tags').v}::VARCHAR END",
        "metric_name": "metric_name" if etype == "telemetry" else "NULL",
        "metric_value": "metric_value_norm" if etype == "telemetry" else "NULL",
        "unit": "unit_norm" if etype == "telemetry" else "NULL",
        **dims,
        "cost_type": c.canon("payload.cost_type").s if etype == "cost" else "NULL",
        "cost_usd": "cost_usd" if etype == "cost" else "NULL",
        "threat_type": c.canon("payload.threat_type").s if etype == "security" else "NULL",
        "policy_id": c.canon("payload.policy_id").s if etype == "policy" else "NULL",
        "policy_category": c.canon("payload.policy_category").s if etype == "policy" else "NULL",
        "outcome": "outcome" if etype == "policy" else "NULL",
        "payload": "payload_norm::VARCHAR",
    }
    return valued, normal, rules, payload_norm, out


def _payload_patch(c: _Compiler, group: Group, payload: _Value) -> str:
    """The canonical payload: renamed fields moved to their canonical names and the normalised
    values put in, as reference.canonical_payload does."""
    if group.etype is None:
        return payload.v
    patch, _ = payload_patch_items(c, group.etype)
    if not patch:
        return payload.v
    items = ", ".join(part for key, value in patch.items() for part in (sql_str(key), value))
    return f"json_merge_patch({payload.v}, json_object({items}))"


def select_more(cols: dict[str, str]) -> str:
    """Columns added to a `SELECT *`."""
    return "".join(f",\n        {expr} AS {name}" for name, expr in cols.items())


def valued_and_normal(valued: dict[str, str], normal: dict[str, str], source: str) -> str:
    """The CTEs `valued` and `normal` over `source`: the columns of `normalisation`."""
    return f"""valued AS (
    SELECT *{select_more(valued)}
    FROM {source}
), normal AS (
    SELECT *{select_more(normal)}
    FROM valued
)"""


def payload_patch_items(c: _Compiler, etype: str) -> tuple[dict[str, str], set[str]]:
    """The merge patch of a payload in order (key -> SQL JSON value), and the old names in it:
    each is removed where its field was moved (the canonical name was not sent)."""
    patch: dict[str, str] = {}
    moved: set[str] = set()
    renamed: set[str] = set()
    for dotted_new in _payload_fields(c, etype):
        for old, _ in c.renames(dotted_new):
            renamed.add(dotted_new)
            # The old name goes when it was moved; it stays (as an extra field) when both came.
            key = old.split(".", 1)[1]
            patch[key] = f"CASE WHEN NOT {c.present(dotted_new)} THEN NULL ELSE {c.raw(old)} END"
            moved.add(key)
    for dotted_new in sorted(renamed):
        patch[dotted_new.split(".", 1)[1]] = c.canon(dotted_new).v
    patch |= {
        "telemetry": {"metric_value": "metric_value_norm", "unit": "unit_norm"},
        "cost": {"amount": "cost_usd", "currency": "'USD'"},
        "policy": {"outcome": "outcome"},
    }.get(etype, {})
    return patch, moved


def _dimension_columns(c: _Compiler, etype: str | None) -> dict[str, str]:
    """Dimension columns read from the canonical payload maps: one list extraction per map."""
    out = {dim: "NULL" for dim in contract.DIMENSIONS}
    found: dict[str, list[str]] = {}
    for head, pairs in dimension_sources(etype).items():
        if not head:
            # Fields of the payload itself: their canonical columns already follow renames.
            for dim, key in pairs:
                found.setdefault(dim, []).append(c.canon(f"payload.{key}").text)
            continue
        values = dimension_list(c, head, pairs)
        for i, (dim, _) in enumerate(pairs, start=1):
            found.setdefault(dim, []).append(f"{values}[{i}]")
    for dim, exprs in found.items():
        out[dim] = exprs[0] if len(exprs) == 1 else f"coalesce({', '.join(exprs)})"
    return out


def dimension_sources(etype: str | None) -> dict[str, list[tuple[str, str]]]:
    """Where an event type's dimensions are: payload map -> [(dimension, key)], with "" for
    fields of the payload itself (contract.DIMENSION_SOURCES)."""
    by_map: dict[str, list[tuple[str, str]]] = {}
    for dim, by_type in contract.DIMENSION_SOURCES.items():
        for path in by_type.get(etype, ()):
            head, _, key = path.partition(".")
            by_map.setdefault(head if key else "", []).append((dim, key or head))
    return by_map


def dimension_list(c: _Compiler, head: str, pairs: list[tuple[str, str]]) -> str:
    """SQL: the values of the (dimension, key) pairs of one payload map, as a list."""
    keys = _sql_list(f"$.{chr(34)}{key}{chr(34)}" for _, key in pairs)
    return f"json_extract_string({c.canon(f'payload.{head}').v}, {keys})"


def _payload_fields(c: _Compiler, etype: str) -> list[str]:
    return [f"payload.{name}" for name in contract.payload_schema(etype).get("properties", {})]


@dataclass
class ValidatedRecords:
    """validate_batches' result: parts (one per group of records read alike, plus the records
    the router dead-lettered), each in batch order, so a batch's rows are zero-copy slices."""

    parts: list[pa.Table]

    def for_batch(self, batch_idx: int) -> pa.Table:
        """All of one batch's records (valid and not), without copying them."""
        slices = []
        for part in self.parts:
            positions = part["batch_idx"].to_numpy()
            lo, hi = np.searchsorted(positions, [batch_idx, batch_idx + 1])
            if hi > lo:
                slices.append(part.slice(lo, hi - lo))
        return pa.concat_tables(slices) if slices else output_schema().empty_table()

    def table(self) -> pa.Table:
        """Every record of every batch, in one table."""
        return pa.concat_tables(self.parts) if self.parts else output_schema().empty_table()


@dataclass
class LeanVerdict:
    """The first stage of `validate_batches`: the batches' records, numbered by row_id (None when
    there are none), and the rows the lean path accepted (None with `lean=False`), before the
    batch watermark is applied."""

    records: pa.Table | None
    accepted: pa.Table | None
    batches: int
    received_at: datetime


def validate_batches(
    batches: list[pa.Table],
    received_at: datetime,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    lean: bool = True,
) -> ValidatedRecords:
    """Judge and normalise every record of several batches; one output row per input record.

    `batches` are `records.split_records(...)` tables; output rows carry `batch_idx` (position in
    `batches`) and `rec_idx`, `is_valid`, `reasons` (a list of {code, field, message}) and the
    normalised OUTPUT_COLUMNS (NULL where a record is invalid). The batch watermark for the
    too-old rule is per batch.

    With `lean` (the default) the lean path (fast_path.py) takes the records it can show valid
    and the full statements below judge the rest; `lean=False` judges every record the full way
    (the tests hold the two to the same output). The two stages are `accept_lean` and
    `judge_rest`: ingest runs them on different threads, one chunk apart.
    """
    return judge_rest(accept_lean(batches, received_at, con, lean=lean), con)


def accept_lean(
    batches: list[pa.Table],
    received_at: datetime,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    lean: bool = True,
) -> LeanVerdict:
    """Stage 1 of `validate_batches`: the records the lean path takes (one parallel statement)."""
    from hub_pipelines.events import fast_path  # it is built from this module's pieces

    tables = [
        t.append_column("batch_idx", pa.repeat(pa.scalar(i, pa.int32()), t.num_rows))
        for i, t in enumerate(batches)
    ]
    records = pa.concat_tables(tables) if tables else None
    if records is None or records.num_rows == 0:
        return LeanVerdict(None, None, len(batches), received_at)
    # Results are aligned with the records by row_id, not by trusting scan order.
    records = records.append_column("row_id", pa.array(np.arange(records.num_rows, dtype=np.int64)))
    if not lean:
        return LeanVerdict(records, None, len(batches), received_at)
    with utc_connection(con) as c:
        accepted = fast_path.accept(c, records, received_at)
    return LeanVerdict(records, accepted, len(batches), received_at)


def judge_rest(verdict: LeanVerdict, con: duckdb.DuckDBPyConnection | None = None) -> ValidatedRecords:
    """Stage 2 of `validate_batches`: the batch watermark, and the full statements for every
    record the lean path did not take (a few per cent of them: mostly small statements run one
    after the other, so ingest overlaps this stage with the next chunk's stage 1)."""
    from hub_pipelines.events import fast_path

    records, accepted, received_at = verdict.records, verdict.accepted, verdict.received_at
    if records is None:
        return ValidatedRecords([])
    with utc_connection(con) as con:
        rest, routed = _route(con, records, accepted)
        readings = [(routed["event_time"], rest["batch_idx"])]
        if accepted is not None:
            readings.append((accepted["event_time"], accepted["batch_idx"]))
        newest = _newest_by_batch(readings, verdict.batches, received_at)
        too_old = _too_old(accepted, newest, received_at) if accepted is not None else None
        if too_old is not None and pc.any(too_old).as_py():
            # Their reasons come from the full statements, like every invalid record's.
            accepted = accepted.filter(pc.invert(too_old))
            rest, routed = _route(con, records, accepted)
        terminal = routed["terminal_reasons"]
        groups, group_id = _group_ids(routed)
        combined = rest.drop_columns(["row_id"]).rename_columns({"raw": "raw_text"})
        for name in ("root_type", "major", "is_legacy", "src", "etype", "ts_json", "ts_text", "event_time"):
            combined = combined.append_column(name, routed[name])
        combined = combined.append_column("batch_newest", pc.take(newest, rest["batch_idx"]))
        combined = combined.append_column("group_id", group_id)
        parts = [_terminal_rows(combined, terminal)]
        if accepted is not None and accepted.num_rows:
            parts.append(fast_path.with_raw_text(accepted, records))
        # Each group gets its own filtered copy to scan: measured faster than one registered table
        # read through a filtered view.
        for number, group in enumerate(groups):
            con.register("group_records", combined.filter(pc.equal(group_id, number)))
            # A parallel scan does not keep the rows in batch order; DuckDB's sort puts them back
            # for less than sorting the (wide) result in Arrow.
            ordered = f"SELECT * FROM ({group_sql(group)}) ORDER BY batch_idx, rec_idx"
            part = con.sql(ordered, params={"received_at": received_at}).to_arrow_table()
            con.unregister("group_records")
            parts.append(part)
    schema = output_schema()
    return ValidatedRecords(
        [part if part.schema == schema else part.cast(schema) for part in parts if part.num_rows]
    )


@contextmanager
def utc_connection(
    con: duckdb.DuckDBPyConnection | None = None, *, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The caller's connection, or a new in-memory one closed afterwards (with `threads` worker
    threads where given); in UTC either way."""
    own = con is None
    con = con or duckdb.connect()
    try:
        if own and threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        if own:
            con.close()


def _route(
    con: duckdb.DuckDBPyConnection, records: pa.Table, accepted: pa.Table | None
) -> tuple[pa.Table, pa.Table]:
    """The records the lean path did not accept, and the router's reading of them (row for row)."""
    from hub_pipelines.events.fast_path import taken  # it is built from this module's pieces

    rest = records
    if accepted is not None and accepted.num_rows:
        rest = records.filter(pc.invert(taken(accepted, records)))
    con.register("records", rest)
    try:
        return rest, con.sql(router_sql()).to_arrow_table()
    finally:
        con.unregister("records")


def _group_ids(routed: pa.Table) -> tuple[list[Group], pa.Array]:
    """The distinct groups of the records the router let through, and each record's group number
    (-1 for records already dead-lettered). Vectorised: one text key per record, dictionary-encoded."""
    open_ = pc.is_null(routed["terminal_reasons"])
    # Source and event type are NULL or non-empty names, so "" stands for NULL unambiguously.
    key = pc.binary_join_element_wise(
        pc.if_else(pc.fill_null(routed["is_legacy"], False), "1", "0"),
        pc.fill_null(routed["group_source"], ""),
        pc.fill_null(routed["group_etype"], ""),
        "|",
    )
    encoded = pc.if_else(open_, key, pa.scalar(None, pa.string())).combine_chunks().dictionary_encode()
    found = [k.split("|") for k in encoded.dictionary.to_pylist()]
    keys = [(legacy == "1", source or None, etype or None) for legacy, source, etype in found]
    order = sorted(range(len(keys)), key=lambda i: str(keys[i]))
    number = np.empty(len(keys) + 1, dtype=np.int32)
    number[order] = np.arange(len(order), dtype=np.int32)
    number[-1] = -1  # the index -1 (a dead-lettered record) maps to itself
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return [Group(*keys[i]) for i in order], pa.array(number[indices])


def output_schema() -> pa.Schema:
    """The Arrow schema of validate_batches' result (raw_text stays a large string, as split)."""
    return pa.schema(
        [
            (name, pa.large_string() if name == "raw_text" else _ARROW_TYPES[t])
            for name, t in OUTPUT_COLUMNS.items()
        ]
    )


def _same(column: pa.ChunkedArray, value: str | None) -> pa.ChunkedArray:
    """Null-safe equality of a string column and a constant."""
    if value is None:
        return pc.is_null(column)
    return pc.fill_null(pc.equal(column, value), False)


def _newest_by_batch(
    readings: list[tuple[pa.ChunkedArray, pa.ChunkedArray]], batches: int, received_at: datetime
) -> pa.Array:
    """Per batch, the newest event time not in the future (the batch watermark of the too-old
    rule), or null when the batch has none; `readings` are (event_time, batch_idx) columns."""
    utc = pa.timestamp("us", tz="UTC")
    times = pa.chunked_array([c.cast(utc) for t, _ in readings for c in t.chunks], utc)
    batch_idx = pa.chunked_array([c for _, b in readings for c in b.chunks], pa.int32())
    limit = pa.scalar(received_at + contract.MAX_FUTURE_SKEW, utc)
    usable = pc.if_else(pc.fill_null(pc.less_equal(times, limit), False), times, pa.scalar(None, utc))
    per_batch = (
        pa.table({"batch_idx": batch_idx, "t": usable}).group_by("batch_idx").aggregate([("t", "max")])
    )
    newest: list[datetime | None] = [None] * batches  # a batch without records needs none
    for i, t in zip(per_batch["batch_idx"].to_pylist(), per_batch["t_max"].to_pylist(), strict=True):
        newest[i] = t
    return pa.array(newest, utc)


def _too_old(accepted: pa.Table, newest: pa.Array, received_at: datetime) -> pa.Array:
    """The timestamp_too_old rule of `group_sql`, for rows the lean path accepted."""
    received = pa.scalar(received_at, pa.timestamp("us", tz="UTC"))
    watermark = pc.fill_null(pc.take(newest, accepted["batch_idx"]), received)
    threshold = pc.subtract(watermark, pa.scalar(contract.MAX_EVENT_AGE, pa.duration("us")))
    times = accepted["event_time"].cast(pa.timestamp("us", tz="UTC"))
    return pc.fill_null(pc.less(times, threshold), False)


def _terminal_rows(combined: pa.Table, terminal: pa.ChunkedArray) -> pa.Table:
    """Output rows for records the router already dead-lettered."""
    rows = combined.append_column("terminal_reasons", terminal).filter(pc.is_valid(terminal))
    schema = output_schema()
    columns = []
    for field in schema:
        if field.name in ("batch_idx", "rec_idx", "raw_text"):
            columns.append(rows[field.name].cast(field.type))
        elif field.name == "reasons":
            columns.append(rows["terminal_reasons"].cast(field.type))
        elif field.name == "is_valid":
            columns.append(pa.array([False] * rows.num_rows))
        else:
            columns.append(pa.nulls(rows.num_rows, field.type))
    return pa.table(columns, schema=schema)


def validate_records(records: pa.Table, received_at: datetime) -> pa.Table:
    """validate_batches for a single batch, as one table."""
    return validate_batches([records], received_at).table()
