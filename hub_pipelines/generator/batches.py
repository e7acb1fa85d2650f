"""Batch files of a simulation: OUT/<source_module>/<YYYY-MM-DD>/<source>-<YYYYMMDD>-<NN>.jsonl[.gz],
plus OUT/labels.json and OUT/manifest.json.

One batch per source module per UTC day (split into parts of at most max_events_per_file records),
events in time order, bad records (corrupt_rate) mixed in at random places. The manifest says what
ingest must make of it all: how many records go in, how many are stored, how many are duplicates
and how many are dead-lettered with which reason code.

The expected counts hold for a received_at inside manifest["received_at_window"]: late from the
newest good event minus an hour (so no good event is in the future) to the earliest "future" record
minus an hour (so those are still in the future). The too-old rule is judged against each batch's
newest event, so good events of any age stay good.
"""

from __future__ import annotations

import gzip as gzip_module
import math
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson

from hub_pipelines.generator import corruption
from hub_pipelines.generator.config import DAY_MS, HOUR_MS, format_utc
from hub_pipelines.generator.ids import uuids
from hub_pipelines.generator.render import EVENT_TYPE_OF_SOURCE, EVENTS_PER_ITEM, SOURCES, Renderer
from hub_pipelines.generator.simulation import Simulation

FORMATS = ("jsonl", "json")
# zlib's level 6 is its usual trade-off; gzip is optional and costs about 2x the write time.
GZIP_LEVEL = 6
# Good events kept from a source's previous day to copy into the next day as duplicates.
_DUPLICATE_POOL = 64


class _Days:
    """Which items of each source fall on each UTC day, in time order."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        cfg = sim.config
        self.days = cfg.days
        self.start_ms = cfg.start_ms
        r = sim.requests
        # Requests are in hour order already: a day is a contiguous slice.
        self._request_bounds = np.searchsorted(r.hour, np.arange(cfg.days + 1) * 24)
        self._security_bounds = np.searchsorted(sim.security.hour, np.arange(cfg.days + 1) * 24)
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for source, ts in (
            ("llm-policy-engine", sim.policy.ts_ms),
            ("llm-governance", np.array([e["ts_ms"] for e in sim.governance], dtype=np.int64)),
            ("llm-registry", np.array([e["ts_ms"] for e in sim.registry], dtype=np.int64)),
        ):
            order = np.argsort(ts, kind="stable")
            bounds = np.searchsorted(ts[order], self.start_ms + np.arange(cfg.days + 1) * DAY_MS)
            self._sorted[source] = (order, bounds)

    def ts_of(self, source: str) -> np.ndarray:
        sim = self.sim
        return {
            "llm-observatory": sim.requests.ts_ms,
            "llm-costops": sim.requests.ts_ms,
            "llm-sentinel": sim.security.ts_ms,
            "llm-policy-engine": sim.policy.ts_ms,
            "llm-governance": np.array([e["ts_ms"] for e in sim.governance], dtype=np.int64),
            "llm-registry": np.array([e["ts_ms"] for e in sim.registry], dtype=np.int64),
        }[source]

    def items(self, source: str, day: int, ts: np.ndarray) -> np.ndarray:
        """Item rows of `source` on `day`, in time order."""
        if source in ("llm-observatory", "llm-costops", "llm-sentinel"):
            bounds = self._request_bounds if source != "llm-sentinel" else self._security_bounds
            lo, hi = int(bounds[day]), int(bounds[day + 1])
            return lo + np.argsort(ts[lo:hi], kind="stable")
        order, bounds = self._sorted[source]
        return order[bounds[day] : bounds[day + 1]]

    def item_counts(self, source: str) -> np.ndarray:
        if source in ("llm-observatory", "llm-costops"):
            return np.diff(self._request_bounds)
        if source == "llm-sentinel":
            return np.diff(self._security_bounds)
        return np.diff(self._sorted[source][1])


def _plan_corruption(sim: Simulation, events: dict[str, np.ndarray]) -> dict[tuple[str, int], list[str]]:
    """Corrupt records to mix into each (source, day): about corrupt_rate x the good events."""
    cfg = sim.config
    total = int(sum(int(v.sum()) for v in events.values()))
    n_corrupt = int(round(cfg.corrupt_rate * total))
    if n_corrupt == 0:
        return {}
    rng = cfg.rng("corruption-plan")
    cells = [(source, day) for source in SOURCES for day in range(cfg.days) if events[source][day] > 0]
    weights = np.array([events[s][d] for s, d in cells], dtype=float)

    def eligible(kind: corruption.CorruptionKind) -> np.ndarray:
        ok = np.array(
            [
                (kind.sources is None or s in kind.sources) and (kind.name != "future" or d == cfg.days - 1)
                for s, d in cells
            ]
        )
        return ok

    usable = [(k, eligible(k)) for k in corruption.KINDS]
    usable = [(k, mask) for k, mask in usable if mask.any()]
    kind_weights = np.array([k.weight for k, _ in usable])
    picks = rng.choice(len(usable), size=n_corrupt, p=kind_weights / kind_weights.sum())
    plan: dict[tuple[str, int], list[str]] = {}
    for index, (kind, mask) in enumerate(usable):
        count = int((picks == index).sum())
        if not count:
            continue
        w = np.where(mask, weights, 0.0)
        targets = rng.choice(len(cells), size=count, p=w / w.sum())
        cross = rng.random(count) < 0.5
        for target, other_file in zip(targets.tolist(), cross.tolist(), strict=True):
            name = "duplicate_other_file" if kind.name == "duplicate" and other_file else kind.name
            plan.setdefault(cells[target], []).append(name)
    # Fixed order inside each cell: the plan must not depend on dict or set iteration.
    return {cell: sorted(kinds) for cell, kinds in sorted(plan.items())}


def _encode(records: list[str], fmt: str) -> bytes:
    """The batch file's bytes. Every piece is joined once and encoded once: at a gigabyte of
    events, each extra copy of the text costs a noticeable share of the run."""
    if fmt == "json":
        return "".join(("[\n", ",\n".join(records), "\n]\n")).encode()
    records.append("")  # the final newline, without copying the joined text again
    try:
        return "\n".join(records).encode()
    finally:
        records.pop()


def write_batches(
    sim: Simulation, out_dir: str | os.PathLike, fmt: str = "jsonl", gzip: bool = False
) -> dict:
    """Write the simulation's events as batch files under out_dir; returns the manifest (also
    written to out_dir/manifest.json). The same simulation always gives the same bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    renderer = Renderer(sim)
    days = _Days(sim)
    writer = _BatchWriter(sim, out, fmt, gzip, {s: days.item_counts(s) * EVENTS_PER_ITEM[s] for s in SOURCES})
    render = {
        "llm-observatory": renderer.observatory,
        "llm-costops": renderer.costops,
        "llm-sentinel": renderer.sentinel,
        "llm-policy-engine": renderer.policy_engine,
        "llm-governance": renderer.governance,
        "llm-registry": renderer.registry,
    }
    timestamps = {source: days.ts_of(source) for source in SOURCES}
    # Day by day, all sources: the observatory and costops files of a day share their requests.
    for day in range(sim.config.days):
        for source in SOURCES:
            ts = timestamps[source]
            items = days.items(source, day, ts)
            if len(items):
                writer.write_day(
                    source, day, render[source](items), np.repeat(ts[items], EVENTS_PER_ITEM[source])
                )
    manifest = writer.manifest()
    (out / "labels.json").write_bytes(orjson.dumps(sim.labels, option=orjson.OPT_INDENT_2) + b"\n")
    if sim.config.scenarios:
        # Ground truth of the injected multi-module scenarios (hub_pipelines.generator.scenarios).
        (out / "scenarios.json").write_bytes(orjson.dumps(sim.scenarios, option=orjson.OPT_INDENT_2) + b"\n")
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


class _BatchWriter:
    """Writes each (source, day) as one or more batch files with its planned bad records mixed
    in, and tallies what ingest must make of them."""

    def __init__(
        self, sim: Simulation, out: Path, fmt: str, gzip: bool, events: dict[str, np.ndarray]
    ) -> None:
        self.sim, self.cfg, self.out, self.fmt, self.gzip = sim, sim.config, out, fmt, gzip
        self.suffix = f".{fmt}.gz" if gzip else f".{fmt}"
        self.plan = _plan_corruption(sim, events)
        # Fresh ids of corrupt records, made in one go, used in the order records are written.
        self.fresh_ids = uuids(self.cfg.seed, "corrupt", np.arange(sum(len(k) for k in self.plan.values())))
        self.rng = self.cfg.rng("corruption")
        self.files: list[dict] = []
        self.good_by_source: Counter[str] = Counter()
        self.corruptions: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.duplicates = 0
        self.records_in = 0
        self.used_ids = 0
        self.newest_good_ms: int | None = None
        self.earliest_future_ms: int | None = None
        # A sample of each source's last written day, to re-send as duplicates the next day.
        self.previous: dict[str, tuple[int, list[str]]] = {}

    def write_day(self, source: str, day: int, lines: list[str], line_ts: np.ndarray) -> None:
        cfg, rng = self.cfg, self.rng
        self.good_by_source[source] += len(lines)
        self.newest_good_ms = max(self.newest_good_ms or 0, int(line_ts.max()))
        n_parts = math.ceil(len(lines) / cfg.max_events_per_file)
        per_part = math.ceil(len(lines) / n_parts)
        parts = [(k * per_part, min((k + 1) * per_part, len(lines))) for k in range(n_parts)]
        kinds = self.plan.get((source, day), [])
        part_of = rng.integers(0, n_parts, len(kinds)).tolist()
        sample = [lines[int(i)] for i in rng.integers(0, len(lines), min(_DUPLICATE_POOL, len(lines)))]
        previous_day, previous_sample = self.previous.get(source, (-2, []))
        date = (cfg.start_utc + timedelta(days=day)).date()
        for part, (lo, hi) in enumerate(parts):
            records = lines[lo:hi]
            bad: list[str] = []
            for kind in (k for k, p in zip(kinds, part_of, strict=True) if p == part):
                if kind == "duplicate_other_file":
                    # Events re-sent from the previous day, or from another part of this day.
                    if previous_day == day - 1:
                        bad.append(previous_sample[int(rng.integers(0, len(previous_sample)))])
                    elif n_parts > 1:
                        other_lo, other_hi = parts[(part + 1) % n_parts]
                        bad.append(lines[int(rng.integers(other_lo, other_hi))])
                    else:
                        bad.append(records[int(rng.integers(0, len(records)))])
                        kind = "duplicate"
                    self.corruptions[kind] += 1
                    self.duplicates += 1
                else:
                    bad.append(self._bad_record(kind, records, int(line_ts[lo:hi].max())))
            if bad:
                records = _mix_in(records, bad, rng)
            relative = Path(source) / date.isoformat() / f"{source}-{date:%Y%m%d}-{part:02d}{self.suffix}"
            self._write(relative, records)
            self.files.append(
                {
                    "path": relative.as_posix(),
                    "source_module": source,
                    "date": date.isoformat(),
                    "part": part,
                    "records": len(records),
                    "good_events": hi - lo,
                    "corrupt_records": len(bad),
                }
            )
        self.previous[source] = (day, sample)

    def _bad_record(self, kind: str, records: list[str], batch_newest_ms: int) -> str:
        rng = self.rng
        template = records[int(rng.integers(0, len(records)))]
        if kind == "unit_mismatch":
            # Prefer a latency event: "a latency sent in bytes".
            for _ in range(16):
                if '"latency_ms"' in template:
                    break
                template = records[int(rng.integers(0, len(records)))]
        fresh_id = self.fresh_ids[self.used_ids]
        self.used_ids += 1
        text = corruption.corrupt(kind, template, fresh_id, rng, batch_newest_ms, self.cfg.end_ms, self.fmt)
        self.corruptions[kind] += 1
        if kind == "duplicate":
            self.duplicates += 1
        else:
            self.reasons[corruption.expected_reason(kind, self.fmt)] += 1
        if kind == "future":
            moment = corruption.timestamp_ms(_timestamp_of(text))
            self.earliest_future_ms = min(self.earliest_future_ms or moment, moment)
        return text

    def _write(self, relative: Path, records: list[str]) -> None:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _encode(records, self.fmt)
        if self.gzip:
            # mtime=0 and no file name in the header: the same events give the same bytes.
            data = gzip_module.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        path.write_bytes(data)
        self.records_in += len(records)

    def manifest(self) -> dict:
        cfg = self.cfg
        stored = int(sum(self.good_by_source.values()))
        dead = int(sum(self.reasons.values()))
        assert self.records_in == stored + self.duplicates + dead
        return {
            "generator": "hub_pipelines.generator",
            "format": self.fmt,
            "gzip": self.gzip,
            "config": cfg.as_dict(),
            "time_range": {"start": format_utc(cfg.start_utc), "end": format_utc(cfg.end_utc)},
            # The expected counts hold for a received_at in [from, to) ("to" is null when no
            # record is meant to be in the future).
            "received_at_window": {
                "from": _iso_ms(self.newest_good_ms - HOUR_MS) if self.newest_good_ms is not None else None,
                "to": _iso_ms(self.earliest_future_ms - HOUR_MS)
                if self.earliest_future_ms is not None
                else None,
            },
            # Good events, each once (duplicates and bad records are counted under "expected").
            "events_written": stored,
            "events_by_source": {s: self.good_by_source[s] for s in SOURCES},
            "events_by_event_type": {EVENT_TYPE_OF_SOURCE[s]: self.good_by_source[s] for s in SOURCES},
            "corruptions": {k: self.corruptions[k] for k in sorted(self.corruptions)},
            "expected": {
                "events_in": self.records_in,
                "stored": stored,
                "duplicates": self.duplicates,
                "dead_lettered": dead,
                "dead_letter_reasons": {code: self.reasons[code] for code in sorted(self.reasons)},
            },
            "labels": len(self.sim.labels),
            **({"scenarios": len(self.sim.scenarios)} if cfg.scenarios else {}),
            "files": sorted(self.files, key=lambda f: (SOURCES.index(f["source_module"]), f["path"])),
        }


def _timestamp_of(text: str):
    record = orjson.loads(text)
    for name in ("timestamp", "ts", "evaluated_at", "recorded_at"):
        if name in record:
            return record[name]
    raise ValueError("record has no timestamp")


def _iso_ms(ms: int) -> str:
    return str(np.datetime64(ms, "ms")) + "Z"


def _mix_in(records: list[str], bad: list[str], rng: np.random.Generator) -> list[str]:
    """records with `bad` inserted at random places (order of `bad` kept)."""
    positions = np.sort(rng.integers(0, len(records) + 1, len(bad))).tolist()
    out: list[str] = []
    last = 0
    for position, text in zip(positions, bad, strict=True):
        out.extend(records[last:position])
        out.append(text)
        last = position
    out.extend(records[last:])
    return out
