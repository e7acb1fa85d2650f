"""Connections to the warehouse, the same way on DuckDB and PostgreSQL.

Everything above this module speaks SQLAlchemy Core and parameterised SQL. Two things differ per
engine and live here: how a bulk Arrow table is staged for SQL (DuckDB scans it in place;
PostgreSQL receives it with COPY into a temporary table) and how connections are opened (an
embedded DuckDB file admits one writing process at a time, so opening it retries while another
process holds it, and connections are not pooled so the lock is released as soon as work ends).
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from duckdb_engine import ConnectionWrapper
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from hub_pipelines.warehouse.tables import metadata

log = logging.getLogger(__name__)

# Rows per DuckDB row group (DuckDB's default is 122,880); see _SharedFiles.
DUCKDB_ROW_GROUP_SIZE = 8192

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_TYPES = {
    pa.string(): "TEXT",
    pa.large_string(): "TEXT",
    pa.float64(): "DOUBLE PRECISION",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.bool_(): "BOOLEAN",
}


def normalise_url(url: str) -> str:
    """SQLAlchemy 2.x may pick psycopg 3 for a bare postgresql:// URL; hub ships psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The URL without its password, for logs and metadata."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class Warehouse:
    """The hub warehouse behind one SQLAlchemy engine."""

    def __init__(self, url: str, lock_timeout_s: float = 300.0) -> None:
        self.url = normalise_url(url)
        self.lock_timeout_s = lock_timeout_s
        self.dialect = "duckdb" if self.url.startswith("duckdb") else "postgresql"
        if self.dialect == "duckdb":
            path = self.url.split("duckdb:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # Connections are cursors of one in-memory DuckDB per file and process, with the
                # file attached to it (_SHARED_FILES): the only way DuckDB takes a row-group size.
                self._duckdb_file: str | None = os.path.realpath(path)
                self.engine: Engine = sa.create_engine("duckdb:///:memory:", poolclass=NullPool)
                sa.event.listen(self.engine, "do_connect", self._connect_file)
            else:
                self._duckdb_file = None
                self.engine = sa.create_engine(self.url, poolclass=NullPool)
        else:
            self.engine = sa.create_engine(
                self.url, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"}
            )
        sa.event.listen(self.engine, "connect", self._on_connect)

    @property
    def is_duckdb(self) -> bool:
        return self.dialect == "duckdb"

    def _connect_file(self, _dialect, _record, _cargs, _cparams) -> ConnectionWrapper:
        return _SHARED_FILES.connect(self._duckdb_file)

    def _on_connect(self, dbapi_connection, _record) -> None:
        if self.is_duckdb:
            dbapi_connection.execute("SET TimeZone = 'UTC'")
            if self._duckdb_file:
                dbapi_connection.execute(f"USE {_ATTACHED_AS}")

    def __repr__(self) -> str:
        return f"Warehouse({redact(self.url)})"

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection (autobegin, commit explicitly), waiting while another process holds the
        embedded DuckDB file."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                conn = self.engine.connect()
                break
            # The file is attached in a connect hook, so a held lock may surface unwrapped.
            except (sa.exc.DBAPIError, duckdb.IOException) as exc:
                if not (self.is_duckdb and _is_lock_conflict(exc)) or time.monotonic() > deadline:
                    raise
                log.info("warehouse file is busy; retrying in %.2fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def session(self) -> Iterator[Connection]:
        """One connection for a run of several transactions (an ingest of many batches).

        On DuckDB each commit would otherwise checkpoint (recompress the table's last row groups)
        once the log passes 16 MB, and each closed connection would shut the database down: the
        session raises the checkpoint threshold, so commits only append to the write-ahead log
        (durable all the same), and checkpoints once at the end."""
        with self.connect() as conn:
            if self.is_duckdb:
                conn.exec_driver_sql("SET checkpoint_threshold = '1GB'")
                conn.commit()
            try:
                yield conn
            finally:
                if self.is_duckdb and not conn.closed:
                    conn.rollback()
                    conn.exec_driver_sql("CHECKPOINT")
                    conn.commit()

    def create_tables(self) -> None:
        """Create every table that does not exist yet (idempotent)."""
        with self.begin() as conn:
            metadata.create_all(conn, checkfirst=True)

    def stage(self, conn: Connection, name: str, table: pa.Table) -> None:
        """Make an Arrow table queryable as `name` for the rest of the transaction."""
        if not _IDENTIFIER.match(name):
            raise ValueError(f"staging table name {name!r} is not a plain identifier")
        if self.is_duckdb:
            conn.connection.driver_connection.register(name, table)
            return
        columns = ", ".join(f"{field.name} {_pg_type(field.type)}" for field in table.schema)
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
        if table.num_rows == 0:
            return
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
        buffer.seek(0)
        cursor = conn.connection.driver_connection.cursor()
        try:
            # Every non-null value is quoted, so an unquoted empty field is NULL and "" is ''.
            cursor.copy_expert(f"COPY {name} FROM STDIN WITH (FORMAT csv)", buffer)
        finally:
            cursor.close()

    def unstage(self, conn: Connection, name: str) -> None:
        if self.is_duckdb:
            conn.connection.driver_connection.unregister(name)
        else:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    def table_counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return {
                name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in metadata.tables.items()
            }


# The name the warehouse file is attached under, in every connection's in-memory database.
_ATTACHED_AS = "warehouse"


class _SharedFileConnection(ConnectionWrapper):
    """A cursor of a shared in-memory DuckDB: closing it gives its share back."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, release) -> None:
        super().__init__(cursor)
        self._release = release

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._release is not None:
                release, self._release = self._release, None
                release()


class _SharedFiles:
    """One in-memory DuckDB per warehouse file in this process, with the file attached to it.

    Why attach instead of `duckdb.connect(path)`: a transaction appends straight to the file,
    compressed, only once it fills a row group; a smaller one goes through the write-ahead log and
    is compressed again at the checkpoint. Ingest commits a batch at a time (30k-80k rows, under
    DuckDB's 122,880), so row groups of DUCKDB_ROW_GROUP_SIZE keep each commit's rows out of the
    log (benchmarks/ingest.py: 102 commits 0.5 s instead of 5.5-6.5 s), and DuckDB takes a
    row-group size only in ATTACH. Every connection must attach with the same size, or a
    checkpoint merges the row groups back.

    Why shared: DuckDB refuses to attach a file that another database in the process holds, so
    connections are cursors of one database, and the last to close closes it and releases the
    file's lock for other processes, as DuckDB's own instance cache does for `duckdb.connect(path)`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, list] = {}  # path -> [database, connections open]

    def connect(self, path: str) -> _SharedFileConnection:
        with self._lock:
            entry = self._open.get(path)
            if entry is None:
                database = duckdb.connect()
                # The path comes from configuration, not from data; quoted as a literal.
                literal = "'" + path.replace("'", "''") + "'"
                try:
                    database.execute(
                        f"ATTACH {literal} AS {_ATTACHED_AS} (ROW_GROUP_SIZE {DUCKDB_ROW_GROUP_SIZE})"
                    )
                except BaseException:
                    database.close()
                    raise
                entry = self._open[path] = [database, 0]
            cursor = entry[0].cursor()
            entry[1] += 1
        return _SharedFileConnection(cursor, lambda: self._release(path))

    def _release(self, path: str) -> None:
        with self._lock:
            entry = self._open[path]
            entry[1] -= 1
            if entry[1] == 0:
                del self._open[path]
                entry[0].close()


_SHARED_FILES = _SharedFiles()


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if arrow_type in _PG_TYPES:
        return _PG_TYPES[arrow_type]
    raise TypeError(f"no PostgreSQL staging type for Arrow type {arrow_type}")


def _is_lock_conflict(exc: Exception) -> bool:
    original = getattr(exc, "orig", exc)
    return isinstance(original, duckdb.IOException) and "lock" in str(original).lower()
