"""The lean path: one statement that validates and normalises the records almost every batch is
made of, and leaves every other record to the full compiled validator (`sql_validator`).

The full validator spends about 15 microseconds a record: a router pass, then a statement per
group that extracts every field three ways and evaluates every schema check, building reasons;
this path about 6 (docs/BENCHMARKS.md).
Most records are valid and come in a few layouts (canonical telemetry and cost, legacy 1.x
telemetry), so this path asks a cheaper question first: can this record be shown, with a few
conservative checks, to have nothing wrong with it? One JSON parse gives the JSON text of every
field; one regular expression over those texts, built from the schema, checks every scalar
field's type, pattern, enum and length at once; key counts and object shapes cover the rest.

It is sound by construction, not by sampling:
- a record is accepted only if every check passes, and each check is at least as strict as the
  schema and the business rules it stands for (an escaped string, an unusual layout or a number
  where a string is expected all send the record to the full validator);
- the values of an accepted record are computed by the expressions the full validator uses
  (`sql_validator.normalisation`), read from the same JSON texts. Three are computed another
  way, for speed: the canonical payload's text joined from its members' texts without parsing
  it again, the dimensions from one small parse of their map for the kept rows only, the event
  time without ICU where the offset is zero; the tests hold every column byte for byte equal to
  the full path's;
- the one rule that needs the whole batch (timestamp_too_old) is applied by the caller, who
  sends the records it catches to the full validator for their reasons.
tests/unit/events/test_fast_path.py holds the two paths to identical output on generated and
mutated records, and the reference conformance tests run through this path.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub_pipelines.events import contract
from hub_pipelines.events.sql_validator import (
    OUTPUT_COLUMNS,
    Group,
    _Compiler,
    _epoch_millis_to_text,
    _Value,
    dimension_list,
    dimension_sources,
    normalisation,
    payload_patch_items,
    select_more,
    sql_str,
    valued_and_normal,
)

# The groups this path reads: together about 98% of generated traffic. Everything else (the
# sources with their own names, security, policy, governance and metadata events) goes to the
# full validator, which reads every layout.
LEAN_GROUPS = (
    Group(legacy=False, source=None, etype="telemetry"),
    Group(legacy=False, source=None, etype="cost"),
    Group(legacy=True, source=None, etype="telemetry"),
    Group(legacy=True, source=None, etype="cost"),
)

# A JSON number as DuckDB writes one back (json_extract re-serialises every value).
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SEPARATOR = "\x1f"  # never in json_extract's output: control characters come back escaped


class _Paths:
    """The JSON paths read from every record in the one parse, in first-use order."""

    def __init__(self) -> None:
        self.dotted: list[str] = []

    def index(self, dotted: str) -> int:
        if dotted not in self.dotted:
            self.dotted.append(dotted)
        return self.dotted.index(dotted) + 1

    def column(self, dotted: str) -> str:
        """The column holding the path's JSON text (`columns` makes them from the parse's list:
        each use of a list element would extract it again)."""
        return f"j{self.index(dotted)}"

    def columns(self) -> str:
        return ", ".join(f"j[{i}] AS j{i}" for i in range(1, len(self.dotted) + 1))

    def sql_list(self) -> str:
        return (
            "["
            + ", ".join(sql_str("$." + ".".join(f'"{p}"' for p in d.split("."))) for d in self.dotted)
            + "]"
        )


class _Fields:
    """Canonical fields as columns resolved across layouts: a legacy record's `id` and a
    canonical record's `event_id` are both `f_event_id`, so every group reads one set of columns
    and their expressions are shared."""

    def __init__(self, paths: _Paths) -> None:
        self.paths = paths
        self.columns: dict[str, str] = {}  # column name -> SQL over j and is_legacy

    def column(self, dotted: str, legacy_name: str) -> str:
        name = "f_" + re.sub(r"[^a-z0-9_]", "_", dotted.lower().replace(".", "__"))
        new = self.paths.column(dotted)
        expr = (
            new
            if legacy_name == dotted
            else f"CASE WHEN is_legacy THEN {self.paths.column(legacy_name)} ELSE {new} END"
        )
        if self.columns.setdefault(name, expr) != expr:
            raise NotImplementedError(f"{dotted} has different legacy names in different event types")
        return name


class _LeanReader:
    """Stands in for `sql_validator._Compiler` inside `normalisation`: a group's canonical fields
    read from `j1`, `j2`..., the record's field JSON texts. The lean layouts send a renamed field
    under its old name only, so each canonical field has exactly one name here."""

    def __init__(self, group: Group, paths: _Paths, fields: _Fields) -> None:
        self.group = group
        self.schema = contract.event_schema()
        self._compiler = _Compiler(group)
        self._legacy = _Compiler(Group(legacy=True, source=None, etype=group.etype))
        self._paths = paths
        self._fields = fields

    def renames(self, dotted: str) -> list[tuple[str, str]]:
        return self._compiler.renames(dotted)

    def sent(self, dotted: str) -> str:
        """The name this group's records send a canonical field under."""
        if dotted.count(".") > 1:
            raise NotImplementedError(f"the lean path reads no nested field such as {dotted}")
        olds = [old for old, _ in self.renames(dotted)]
        return olds[0] if olds else dotted

    def text(self, dotted: str) -> str:
        """The JSON text at a path as sent, as VARCHAR (NULL when absent)."""
        return f"{self._paths.column(dotted)}::VARCHAR"

    def raw(self, dotted: str) -> str:
        return self._paths.column(dotted)

    def present(self, dotted: str) -> str:
        return f"({self.text(dotted)} IS NOT NULL)"

    def json_columns(self) -> set[str]:
        """The columns of JSON text resolved across layouts (`canon`)."""
        return set(self._fields.columns)

    def canon(self, dotted: str) -> _Value:
        """The canonical field, from the column resolved across layouts."""
        olds = [old for old, _ in self._legacy.renames(dotted)]
        if self.sent(dotted) not in (dotted, *olds):
            raise NotImplementedError(f"{dotted} is sent under a name the lean layouts do not use")
        return json_text_value(self._fields.column(dotted, olds[0] if olds else dotted))


def json_text_value(json_text: str) -> _Value:
    """A field's type and text derived from its JSON text, without parsing it again. Sound only
    for texts without a backslash (the lean checks ensure it for every string read this way):
    then a JSON string is its value between two quotes, and has no other quote. Byte-level
    functions only (starts_with, replace): the character-level ones (left, trim, substr) decode
    UTF-8 and cost several times more."""
    v = f"{json_text}::VARCHAR"
    kind = (
        f"CASE WHEN starts_with({v}, '\"') THEN 'VARCHAR' WHEN starts_with({v}, '{{') THEN 'OBJECT'"
        f" WHEN starts_with({v}, '[') THEN 'ARRAY' WHEN {v} = 'null' THEN 'NULL'"
        f" WHEN {v} IN ('true', 'false') THEN 'BOOLEAN' WHEN {v} IS NOT NULL THEN 'DOUBLE' END"
    )
    string = f"CASE WHEN starts_with({v}, '\"') THEN replace({v}, '\"', '') END"
    text = f"CASE WHEN starts_with({v}, '\"') THEN replace({v}, '\"', '') WHEN {v} = 'null' THEN NULL ELSE {v} END"
    return _Value(json_text, kind, string, text)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _anchored_inner(pattern: str) -> str:
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith(r"\$")):
        raise NotImplementedError(f"pattern {pattern} is not anchored at both ends")
    return pattern[1:-1]


def scalar_fragment(
    schema: dict[str, Any], node: dict[str, Any], enum: list[str] | None = None
) -> str | None:
    """A regular expression that matches the JSON text of exactly the values the schema node
    accepts (or fewer), or None for objects and maps (checked apart). Strings are matched without
    any backslash, so their text is their value between quotes."""
    node = _resolve(schema, node)
    if "oneOf" in node:
        options = [_resolve(schema, n) for n in node["oneOf"]]
        (inner,) = [n for n in options if n.get("type") != "null"]
        fragment = scalar_fragment(schema, inner)
        return None if fragment is None else f"(?:null|{fragment})"
    types = node.get("type", "string" if "enum" in node else None)
    types = [types] if isinstance(types, str) else list(types or [])
    nullable = "null" in types
    types = [t for t in types if t != "null"]
    if types in (["object"], ["array"]):
        return None
    if len(types) != 1:
        raise NotImplementedError(f"no lean check for a value of types {types}")
    if types == ["number"]:
        if {"minimum", "maximum"} & node.keys():
            raise NotImplementedError("no lean check for number bounds")
        fragment = _NUMBER
    elif types == ["boolean"]:
        fragment = "(?:true|false)"
    elif types == ["string"]:
        values = enum if enum is not None else node.get("enum")
        bounds = {"minLength", "maxLength"} & node.keys()
        if values is not None:
            fragment = '"(?:' + "|".join(re.escape(v) for v in values) + ')"'
        elif "pattern" in node and not bounds:
            fragment = f'"(?:{_anchored_inner(node["pattern"])})"'
        elif "pattern" not in node:
            low, high = node.get("minLength", 0), node.get("maxLength", "")
            fragment = '"[^"\\\\]{' + f"{low},{high}" + '}"'
        else:
            raise NotImplementedError("no lean check for a pattern with length bounds")
    else:
        raise NotImplementedError(f"no lean check for type {types[0]}")
    return f"(?:null|{fragment})" if nullable else fragment


def _map_check(schema: dict[str, Any], node: dict[str, Any], v: str) -> str:
    """Conservative SQL check of an object field's JSON text: true only where the schema surely
    accepts it (a string or nested value where none may be sends the record to the full path)."""
    node = _resolve(schema, node)
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    shape = f"starts_with({v}, '{{')" + (f" OR {v} = 'null'" if "null" in types else "")
    values = node.get("additionalProperties", True)
    if isinstance(values, dict):
        allowed = _resolve(schema, values)["type"]
        allowed = {allowed} if isinstance(allowed, str) else set(allowed)
        if allowed == {"string"}:
            # Only string values: every key's colon is followed by a quote.
            shape = f"({shape}) AND NOT regexp_matches({v}, ':\\s*[^\"\\s]')"
        elif allowed == {"string", "number", "boolean", "null"}:
            # Only scalars: no bracket after the opening one (counted in bytes: see json_text_value).
            shape = (
                f"({shape}) AND NOT contains({v}, '[') AND strlen({v}) - strlen(replace({v}, '{{', '')) = 1"
            )
        else:
            raise NotImplementedError(f"no lean check for maps of {sorted(allowed)}")
    elif values is not True:
        raise NotImplementedError("no lean check for closed objects")
    return f"coalesce({shape}, false)"


class _LeanGroup:
    """The SQL that accepts and normalises one lean group's records."""

    def __init__(self, number: int, group: Group, paths: _Paths, fields: _Fields) -> None:
        self.number = number
        self.group = group
        self.reader = _LeanReader(group, paths, fields)
        self.schema = contract.event_schema()
        mappings = contract.source_mappings()
        legacy_majors = list(mappings["legacy"]["majors"])
        self.majors = (
            legacy_majors if group.legacy else [m for m in contract.ACCEPTED_MAJORS if m not in legacy_majors]
        )
        r = self.reader
        self.event_type_text = r.text(r.sent("event_type"))
        self.schema_version_text = r.text(r.sent("schema_version"))
        # Every value is read here first, so the path list is complete before any SQL is written.
        envelope = self.schema["properties"]
        payload_schema = contract.payload_schema(group.etype)
        unmapped_sources = [s for s in envelope["source_module"]["enum"] if s not in mappings["sources"]]
        fragments: list[str] = []
        texts: list[str] = []
        objects: list[str] = []
        absent: list[str] = []
        known: list[str] = []
        millis_field = mappings["legacy"]["epoch_millis_field"]
        for prefix, properties, required in (
            ("", envelope, self.schema["required"]),
            ("payload.", payload_schema.get("properties", {}), payload_schema.get("required", [])),
        ):
            for name, node in properties.items():
                dotted = prefix + name
                sent = r.sent(dotted)
                if sent != dotted:
                    absent.append(r.text(dotted))  # a layout mixing old and new names goes the full way
                if not prefix:
                    known.append(r.text(sent))
                enum = {"source_module": unmapped_sources, "event_type": [group.etype]}.get(dotted)
                fragment = scalar_fragment(self.schema, node, enum)
                if fragment is None:
                    check = _map_check(self.schema, node, r.text(sent))
                    objects.append(check if name in required else f"({r.text(sent)} IS NULL OR {check})")
                    continue
                if group.legacy and dotted == millis_field:
                    fragment = f"(?:{_NUMBER}|{fragment})"  # epoch milliseconds, converted below
                fragments.append(fragment if name in required else f"(?:|{fragment})")
                texts.append(f"coalesce({r.text(sent)}, '')")
        self.pattern = _SEPARATOR.join(fragments)
        self.values = f"concat_ws(chr({ord(_SEPARATOR)}), {', '.join(texts)})"
        self.shape = " AND ".join(
            [f"nkeys = {' + '.join(f'({k} IS NOT NULL)::INTEGER' for k in known)}"]
            + [f"{a} IS NULL" for a in absent]
            + objects
        )
        self.timestamp = r.canon("timestamp")
        payload = r.canon("payload")
        self.valued, self.normal, rules, merged, self.out = normalisation(r, group, payload)
        # VARCHAR, not JSON: a cast of the rebuilt text to JSON would parse it again.
        self.payload_norm = (
            f"CASE WHEN {self._payload_as_sent()} THEN {self._payload_rebuilt()} ELSE ({merged})::VARCHAR END"
        )
        # The batch watermark is not known yet: the caller applies timestamp_too_old.
        self.rules = [cond for cond, code, _, _ in rules if code != "timestamp_too_old"]
        # The version's text as checked by the pattern: no second parse of it.
        self.out["schema_version"] = r.canon("schema_version").s
        # Dimensions from the group's map (payload.dimensions, payload.attribution), read as
        # sql_validator._dimension_columns reads them: one small parse of the map's text, for the
        # kept rows only (`dimv`, computed last). Reading each dimension in the record's one parse
        # cost more: a path from the root per dimension and layout, for every record.
        self.dim_values, dims = self._dimension_values()
        self.out |= dims

    def _dimension_values(self) -> tuple[str, dict[str, str]]:
        """SQL for the list of this group's dimension values, and each dimension's element of it."""
        by_map = dimension_sources(self.group.etype)
        if not by_map:
            return "NULL::VARCHAR[]", {}
        pairs = [pair for pairs in by_map.values() for pair in pairs]
        # One map, each dimension once in it (the full path coalesces a dimension's sources).
        if len(by_map) != 1 or "" in by_map or len({dim for dim, _ in pairs}) != len(pairs):
            raise NotImplementedError(f"no lean reading of the dimensions of {self.group.etype} events")
        (head,) = by_map
        return dimension_list(self.reader, head, pairs), {
            dim: f"dimv[{i}]" for i, (dim, _) in enumerate(pairs, start=1)
        }

    def _payload_keys(self) -> list[str]:
        """The payload's keys as this layout sends them, in the schema's order."""
        names = contract.payload_schema(self.group.etype).get("properties", {})
        return [self.reader.sent(f"payload.{name}").split(".", 1)[1] for name in names]

    def _payload_as_sent(self) -> str:
        """SQL: the payload is exactly its schema's fields, all present, in the schema's order.
        Its JSON text is then the members' texts joined, as the one parse wrote them. concat()
        skips NULLs, so every member is required present first."""
        members = [(key, self.reader.text("payload." + key)) for key in self._payload_keys()]
        present = " AND ".join(f"{text} IS NOT NULL" for _, text in members)
        return f"({present} AND {self.reader.text('payload')} = {_object_text(members)})"

    def _payload_rebuilt(self) -> str:
        """The canonical payload's JSON text for such a record without json_merge_patch (which
        parses the payload again) or json_object (which parses its JSON arguments again): the
        payload's members the patch does not name, in their order, then the patch's kept members
        in its order, which is how json_merge_patch orders its result. Members read from the one
        parse keep their JSON text; computed values are written by to_json, the writer json_object
        uses (NULL as null, as json_object writes it). The old names in the patch are always
        removed here: the lean layouts never send both names."""
        patch, moved = payload_patch_items(self.reader, self.group.etype)
        members = [
            (key, f"{self.reader.raw(f'payload.{key}')}::VARCHAR")
            for key in self._payload_keys()
            if key not in patch
        ]
        for key, value in patch.items():
            if key in moved:
                continue
            # A canonical field resolved across layouts is a column of JSON text already.
            text = (
                f"{value}::VARCHAR" if value in self.reader.json_columns() else f"to_json({value})::VARCHAR"
            )
            members.append((key, f"coalesce({text}, 'null')"))
        return _object_text(members)

    def accepts(self) -> str:
        """SQL: every conservative check of the record's shape and values (before the rules).
        The string fragments already refuse a backslash; the contains() guards patterns a future
        schema might write that would admit one."""
        return (
            f"regexp_full_match(vals, {sql_str(self.pattern)}) AND NOT contains(vals, '\\') AND {self.shape}"
        )

    def matches(self) -> str:
        """SQL: this group's records, told apart by schema major and event type."""
        etype = sql_str(chr(34) + self.group.etype + chr(34))
        return f"major IN ({', '.join(map(str, self.majors))}) AND {self.event_type_text} = {etype}"

    def major(self) -> str:
        """SQL: the schema major as sent (every layout sends schema_version under that name)."""
        return f"TRY_CAST(regexp_extract({self.schema_version_text}, '^\"([0-9]+)[.]', 1) AS INTEGER)"

    def ts_text(self) -> str:
        """The timestamp's text as the router reads it."""
        if self.group.legacy:
            # Epoch milliseconds become ISO text, then both forms are parsed alike.
            ts_json = _epoch_millis_to_text(self.timestamp)
            return f"CASE WHEN json_type({ts_json}) = 'VARCHAR' THEN json_extract_string({ts_json}, '$') END"
        return self.timestamp.s  # a string matching the pattern, or the record is not here

    def rule_broken(self) -> str:
        return " OR ".join(f"coalesce({cond}, false)" for cond in self.rules) or "false"


def _object_text(members: list[tuple[str, str]]) -> str:
    """SQL: the compact JSON text of an object with these (key, SQL of the member's JSON text)
    members, in order, built by one concat() (a chain of || copies the text at every step)."""
    parts = [f"'{',' if i else '{'}{json.dumps(key)}:', {text}" for i, (key, text) in enumerate(members)]
    return f"concat({', '.join(parts)}, '}}')"


def _by_group(groups: list[_LeanGroup], exprs: list[str]) -> str:
    """One expression where every group has the same one, else a CASE on the group."""
    return _merged(groups, [{"x": e} for e in exprs])["x"]


def _merged(groups: list[_LeanGroup], per_group: list[dict[str, str]]) -> dict[str, str]:
    """Columns of several groups in one SELECT: a column only one group defines is computed for
    every row (cheap, and unread elsewhere); one defined differently is chosen by group."""
    names = list(dict.fromkeys(n for cols in per_group for n in cols))
    merged = {}
    for name in names:
        having = [(g, cols[name]) for g, cols in zip(groups, per_group, strict=True) if name in cols]
        if len({e for _, e in having}) == 1:
            merged[name] = having[0][1]
        else:
            merged[name] = "CASE gid " + " ".join(f"WHEN {g.number} THEN {e}" for g, e in having) + " END"
    return merged


# The event time as UTC wall time (TIMESTAMP): the router's TRY_CAST(... AS TIMESTAMPTZ) goes
# through ICU (about 1.5 microseconds a record); DuckDB's own parser gives the same instant where
# the offset is zero (it ignores offsets, so any other offset still takes the ICU cast).
# $received_at is given as UTC wall time too, and the caller marks the column UTC.
_UTC_TIME = (
    "CASE WHEN ends_with(ts_text, 'Z') OR ends_with(ts_text, '+00:00') THEN TRY_CAST(ts_text AS TIMESTAMP)"
    " ELSE TRY_CAST(ts_text AS TIMESTAMPTZ)::TIMESTAMP END"
)


@cache
def lean_sql() -> str:
    """The lean statement over `records` (batch_idx, rec_idx, raw, utf8_ok, row_id): row_id and
    OUTPUT_COLUMNS but raw_text of the records it accepts; $received_at is a parameter.

    One pass: every CASE on the group evaluates only its own rows, so each record pays for one
    parse and its own group's checks and values."""
    paths = _Paths()
    fields = _Fields(paths)
    groups = [_LeanGroup(number, group, paths, fields) for number, group in enumerate(LEAN_GROUPS, start=1)]
    ts_pattern = sql_str(contract.event_schema()["properties"]["timestamp"]["pattern"])
    legacy = [g.number for g in groups if g.group.legacy]
    valued = _merged(groups, [g.valued for g in groups])
    normal = _merged(groups, [g.normal for g in groups])
    out = _merged(groups, [g.out for g in groups]) | {
        "reasons": "[]::STRUCT(code VARCHAR, field VARCHAR, message VARCHAR)[]",
        "is_valid": "true",
        "event_time": "event_time",  # TIMESTAMP: see _UTC_TIME
    }
    del out["raw_text"]  # added by with_raw_text
    types = OUTPUT_COLUMNS | {"event_time": "TIMESTAMP"}
    out_cols = ",\n    ".join(f"CAST({expr} AS {types[n]}) AS {n}" for n, expr in out.items())
    source = groups[0].reader.canon("source_module").s

    # Every path is known once the groups are built: the parse below is written last.
    return f"""
WITH parsed AS (
    SELECT row_id, batch_idx, rec_idx, raw AS raw_text,
        json_extract(raw, {paths.sql_list()}) AS j,
        len(json_keys(raw)) AS nkeys
    FROM records
    WHERE utf8_ok AND starts_with(raw, '{{') AND json_valid(raw)
), fields AS (
    SELECT * EXCLUDE (j), {paths.columns()} FROM parsed
), majored AS (
    SELECT *, {groups[0].major()} AS major FROM fields
), grouped AS (
    SELECT *, CASE {" ".join(f"WHEN {g.matches()} THEN {g.number}" for g in groups)} END AS gid
    FROM majored
), valued_texts AS (
    SELECT *, {_by_group(groups, [g.values for g in groups])} AS vals
    FROM grouped
), accepted AS (
    SELECT *, gid IN ({", ".join(map(str, legacy)) or "NULL"}) AS is_legacy
    FROM valued_texts
    WHERE coalesce({_by_group(groups, [g.accepts() for g in groups])}, false)
), resolved AS (
    SELECT *{select_more(fields.columns)}
    FROM accepted
), read AS (
    SELECT *, {source} AS src, {_by_group(groups, [sql_str(g.group.etype) for g in groups])} AS etype,
        {_by_group(groups, [g.ts_text() for g in groups])} AS ts_text
    FROM resolved
), dated AS (
    SELECT *, CASE WHEN regexp_matches(ts_text, {ts_pattern}) THEN {_UTC_TIME} END AS event_time
    FROM read
), {valued_and_normal(valued, normal, "dated")}, kept AS (
    SELECT *, {_by_group(groups, [g.payload_norm for g in groups])} AS payload_norm
    FROM normal
    WHERE event_time IS NOT NULL AND NOT coalesce({_by_group(groups, [g.rule_broken() for g in groups])}, true)
), dimmed AS (
    SELECT *, {_by_group(groups, [g.dim_values for g in groups])} AS dimv
    FROM kept
)
SELECT row_id,
    {out_cols}
FROM dimmed
"""


def accept(con: duckdb.DuckDBPyConnection, records: pa.Table, received_at: datetime) -> pa.Table:
    """The records the lean path accepts, as row_id and OUTPUT_COLUMNS but raw_text, in row_id
    order (still subject to the caller's timestamp_too_old check; `with_raw_text` completes
    them). `records` has batch_idx, rec_idx, raw, utf8_ok and row_id (its row number)."""
    con.register("records", records)
    try:
        # Naive means UTC, as DuckDB reads it in the full statements (TimeZone is UTC there).
        aware = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
        utc_wall_time = aware.astimezone(UTC).replace(tzinfo=None)
        found = con.sql(lean_sql(), params={"received_at": utc_wall_time}).to_arrow_table()
    finally:
        con.unregister("records")
    row_id = found["row_id"]
    # DuckDB keeps the scan's order (preserve_insertion_order, its default); checked rather than
    # trusted, since the caller slices batches by position.
    if len(row_id) > 1 and not pc.all(pc.greater(row_id[1:], row_id[:-1])).as_py():
        found = found.take(pc.sort_indices(row_id))
    utc = pa.timestamp("us", tz="UTC")
    found = found.set_column(
        found.schema.get_field_index("event_time"), "event_time", found["event_time"].cast(utc)
    )
    return found


def with_raw_text(accepted: pa.Table, records: pa.Table) -> pa.Table:
    """The accepted rows with their raw text from `records`, in OUTPUT_COLUMNS order. Done last,
    once the rows are final: the text is most of the bytes, and copying it out of DuckDB cost
    more than this one selection."""
    raw = records["raw"].filter(taken(accepted, records))
    return accepted.add_column(list(OUTPUT_COLUMNS).index("raw_text") + 1, "raw_text", raw).drop_columns(
        ["row_id"]
    )


def taken(accepted: pa.Table, records: pa.Table) -> pa.Array:
    """Per record of `records`, whether `accept` took it (by row_id)."""
    mask = np.zeros(records.num_rows, dtype=bool)
    mask[accepted["row_id"].to_numpy()] = True
    return pa.array(mask)
