"""Generated batches judged as ingest judges them: the contract's reference, record by record, per
batch file, then de-duplication by event id across batches (the first stored copy wins).

The reference takes about half a millisecond a record, so the configs are small and every
generated folder is made once per session.
"""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from hub_pipelines.events.reference import Judged, judge_batch
from hub_pipelines.generator import GeneratorConfig, Simulation, simulate, write_batches

END = "2026-11-01T00:00:00Z"
# Three tenants, so that one of them is the legacy 1.x observatory agent; a low rate keeps the
# number of records small enough for the event-at-a-time reference.
SMALL = {"days": 2, "tenants": 3, "seed": 11, "end": END, "requests_per_hour": 3.0, "policy_fraction": 0.2}


@dataclass
class Ingested:
    events_in: int = 0
    stored: list[dict] = field(default_factory=list)  # normalised rows of stored events
    stored_files: list[str] = field(default_factory=list)  # the batch each stored event came from
    duplicates: int = 0
    duplicate_files: list[tuple[str, str]] = field(default_factory=list)  # (batch, batch of original)
    dead: list[tuple[str, Judged]] = field(default_factory=list)  # (batch, verdict)

    @property
    def reasons(self) -> Counter:
        return Counter(r.code for _, j in self.dead for r in j.reasons)


def batch_records(path: Path) -> list[str]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data.lstrip()[:1] == b"[":
        return [orjson.dumps(element).decode() for element in orjson.loads(data)]
    return [line for line in data.decode().split("\n") if line.strip()]


def batch_files(out_dir: Path) -> list[Path]:
    return sorted(
        p for p in out_dir.rglob("*") if p.is_file() and p.name not in ("manifest.json", "labels.json")
    )


def ingest(out_dir: Path, received_at: datetime) -> Ingested:
    result = Ingested()
    first_seen: dict[str, str] = {}
    for path in batch_files(out_dir):
        name = path.relative_to(out_dir).as_posix()
        records = batch_records(path)
        result.events_in += len(records)
        for judged in judge_batch([(i, text, True) for i, text in enumerate(records)], received_at):
            if not judged.is_valid:
                result.dead.append((name, judged))
            elif judged.row["event_id"] in first_seen:
                result.duplicates += 1
                result.duplicate_files.append((name, first_seen[judged.row["event_id"]]))
            else:
                first_seen[judged.row["event_id"]] = name
                result.stored.append(judged.row)
                result.stored_files.append(name)
    return result


@dataclass
class Generated:
    sim: Simulation
    out_dir: Path
    manifest: dict
    ingested: Ingested


def _generate(tmp_path_factory, name: str, fmt: str = "jsonl", gz: bool = False, **overrides) -> Generated:
    config = GeneratorConfig(**{**SMALL, **overrides})
    sim = simulate(config)
    out_dir = tmp_path_factory.mktemp(name)
    manifest = write_batches(sim, out_dir, fmt=fmt, gzip=gz)
    return Generated(sim, out_dir, manifest, ingest(out_dir, config.end_utc))


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Generated:
    """No corruption: every record must be stored."""
    return _generate(tmp_path_factory, "clean")


@pytest.fixture(scope="session")
def corrupted(tmp_path_factory) -> Generated:
    """A high corrupt rate, so that every kind of bad record occurs."""
    return _generate(tmp_path_factory, "corrupted", corrupt_rate=0.15, seed=12)


@pytest.fixture(scope="session")
def corrupted_array_gzip(tmp_path_factory) -> Generated:
    return _generate(
        tmp_path_factory, "corrupted_array_gzip", fmt="json", gz=True, corrupt_rate=0.15, seed=13
    )


@pytest.fixture(scope="session")
def records_of():
    """path -> the records of a batch file (JSON Lines or a JSON array, gzipped or not)."""
    return batch_records


@pytest.fixture(scope="session")
def files_of():
    """out_dir -> its batch files, sorted."""
    return batch_files
