"""A landing zone in a local folder (the embedded default: $HUB_HOME/landing)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from hub_pipelines.landing.base import LandedFile, LandingZone, is_batch_name

ARCHIVE_DIR = "_archive"


class LocalFolder(LandingZone):
    def __init__(self, root: str | Path, archive_dir: str = ARCHIVE_DIR) -> None:
        self.root = Path(root).resolve()
        self.archive_root = self.root / archive_dir
        self.name = f"file://{self.root}"

    def list_pending(self, start_after: str = "") -> Iterator[LandedFile]:
        if not self.root.exists():
            return
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            # Never descend into the archive; walk in a stable order.
            dirnames[:] = sorted(
                d for d in dirnames if here / d != self.archive_root and not d.startswith(".")
            )
            for name in filenames:
                key = (here / name).relative_to(self.root).as_posix()
                if is_batch_name(key) and key > start_after:
                    keys.append(key)
        for key in sorted(keys):
            try:
                stat = (self.root / key).stat()
            except FileNotFoundError:  # archived by a run while we listed
                continue
            yield LandedFile(key=key, size=stat.st_size, version=f"{stat.st_mtime_ns}-{stat.st_size}")

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def archive(self, key: str, batch_id: str) -> str:
        source = self._path(key)
        target = self.archive_root / Path(key).parent / f"{batch_id[:16]}__{Path(key).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.exists():
            shutil.move(str(source), target)
        return target.relative_to(self.root).as_posix()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"landing key {key!r} is outside the landing folder {self.root}")
        return path
