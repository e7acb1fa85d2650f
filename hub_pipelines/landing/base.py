"""The landing-zone interface the sensor and the ingest assets use, whatever the storage."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

# What a batch file may be called; anything else in a landing zone (temporary files being written,
# READMEs) is left alone.
BATCH_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


# The generator's ground truth sits beside its batches (`hub generate --out DIR` then
# `hub ingest DIR` is the normal round trip): these names at the root of a zone are not batches.
SIDECAR_NAMES = ("labels.json", "manifest.json", "scenarios.json")


def is_batch_name(name: str) -> bool:
    """A key that names a batch file: a batch suffix, not hidden or temporary (leading . or _),
    not one of the generator's sidecar files at the root."""
    base = name.rsplit("/", 1)[-1]
    if name in SIDECAR_NAMES:
        return False
    return not base.startswith((".", "_")) and base.endswith(BATCH_SUFFIXES)


@dataclass(frozen=True)
class LandedFile:
    """A batch file waiting in a landing zone.

    `version` changes whenever the object is written again (size and mtime, or ETag and
    LastModified), so a re-upload of the same name is seen as new; the ingest ledger then decides
    by content whether it was already ingested.
    """

    key: str
    size: int
    version: str


class LandingZone(ABC):
    """Batch files under a root, listed in key order, read whole, archived once ingested."""

    name: str

    @abstractmethod
    def list_pending(self, start_after: str = "") -> Iterator[LandedFile]:
        """Batch files not yet archived whose key sorts after `start_after`, in key order,
        fetched lazily (page by page on S3) so a caller can stop early."""

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def archive(self, key: str, batch_id: str) -> str:
        """Move an ingested file out of the pending area; returns where it went. Archived names
        carry the batch id, so the same name ingested twice keeps both copies."""

    def describe(self) -> str:
        return self.name
