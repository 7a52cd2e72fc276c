"""The workspace: a SQLite catalog of records plus the artifact files they point to.

Every result is published in one step: its files are written to temporary names, fsynced and
renamed into place, and only then is its record committed. A crash at any point leaves either
the whole result or no record at all (at worst an unreferenced file, never a record without its
files). Ids are generated here; no user string ever becomes a path.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from . import records

# Record kinds and the prefix of their ids.
KINDS = {"dataset": "ds", "model": "m", "scores": "s", "embedding": "e", "forget_set": "fs", "run": "r", "sweep": "w", "evaluation": "ev", "job": "j"}

# Each entry upgrades the catalog from version i to i + 1. Later issues append here, so an old
# workspace is migrated in place rather than wiped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE records (
        id      TEXT PRIMARY KEY,
        kind    TEXT NOT NULL,
        created REAL NOT NULL,
        meta    TEXT NOT NULL
    );
    CREATE INDEX records_kind ON records(kind, created);
    CREATE TABLE jobs (
        id        TEXT PRIMARY KEY,
        argv      TEXT NOT NULL,
        title     TEXT NOT NULL,
        state     TEXT NOT NULL,
        progress  REAL NOT NULL DEFAULT 0,
        message   TEXT NOT NULL DEFAULT '',
        pid       INTEGER,
        log_path  TEXT,
        result_id TEXT,
        created   REAL NOT NULL,
        started   REAL,
        finished  REAL
    );
    """,
    # The job queue: a queued job waits in line until `dispatched` (its process started); jobs
    # from before the queue were started at once, so they count as dispatched.
    """
    ALTER TABLE jobs ADD COLUMN dispatched REAL;
    UPDATE jobs SET dispatched = created;
    CREATE INDEX jobs_line ON jobs(state, dispatched, created);
    """,
]


class WorkspaceError(UserError):
    """A request the workspace cannot satisfy (unknown id, wrong kind)."""


def default_path() -> Path:
    return Path(os.environ.get("EXPLORER_WORKSPACE", "workspace"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def npz_bytes(**arrays) -> bytes:
    """Arrays as the bytes of a compressed .npz file, ready for `put` or `write_atomic`."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes so that readers see the old file or the whole new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Workspace:
    """A folder holding `catalog.sqlite` and `artifacts/<kind>/<id>.<name>` files."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True):
        self.path = Path(path) if path is not None else default_path()
        if not create and not (self.path / "catalog.sqlite").exists():
            raise WorkspaceError(f"no workspace at {self.path}: train or import a model first (or pass --workspace)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.artifacts = self.path / "artifacts"
        self.logs = self.path / "logs"
        self.logs.mkdir(exist_ok=True)
        self._migrate()

    # -- connection -------------------------------------------------------------------------

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; `write=True` takes the write lock up front so two writers
        queue behind the busy timeout instead of failing on a lock upgrade."""
        con = sqlite3.connect(self.path / "catalog.sqlite", timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA busy_timeout = 30000")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _migrate(self) -> None:
        with self.connect(write=True) as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = con.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise WorkspaceError(
                    f"workspace {self.path} has schema {version}, newer than this explorer "
                    f"({len(MIGRATIONS)}); upgrade the explorer"
                )
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        con.execute(statement)
            if row is None:
                con.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS),))
            else:
                con.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))

    def schema_version(self) -> int:
        with self.connect() as con:
            return con.execute("SELECT version FROM schema_version").fetchone()[0]

    # -- records ----------------------------------------------------------------------------

    @staticmethod
    def new_id(kind: str) -> str:
        return f"{KINDS[kind]}-{secrets.token_hex(4)}"

    def artifact(self, kind: str, rec_id: str, name: str) -> Path:
        return self.artifacts / kind / f"{rec_id}.{name}"

    def put(
        self,
        kind: str,
        meta: dict,
        files: dict[str, bytes | Path] | None = None,
        rec_id: str | None = None,
    ) -> dict:
        """Publish a record with its artifact files; returns the record. A given `rec_id` (a
        deterministic id) that is taken raises sqlite3.IntegrityError before anything is written.
        A file given as a Path is one written and fsynced beforehand at a `staging` path (too large
        to hold as bytes): it is renamed into place."""
        if kind not in KINDS or kind == "job":
            raise WorkspaceError(f"unknown record kind {kind!r}")
        if rec_id is not None and self._exists(rec_id):
            raise sqlite3.IntegrityError(f"record {rec_id} exists")
        rec_id = rec_id or self.new_id(kind)
        meta = {**meta, "version": records.VERSIONS[kind], "files": sorted(files or {})}
        created = time.time()
        written: list[Path] = []
        try:
            for name, data in (files or {}).items():
                written.append(self.artifact(kind, rec_id, name))
                if isinstance(data, Path):
                    os.replace(data, written[-1])
                    _fsync_dir(written[-1].parent)
                else:
                    write_atomic(written[-1], data)
            with self.connect(write=True) as con:
                con.execute(
                    "INSERT INTO records (id, kind, created, meta) VALUES (?, ?, ?, ?)",
                    (rec_id, kind, created, json.dumps(meta)),
                )
        except BaseException as err:  # a failure or Ctrl-C mid-publish: leave no orphan files either…
            if not self._exists(rec_id):  # …unless the commit went through just before it
                for path in written:
                    path.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise WorkspaceError(f"the disk holding {self.path} is full: nothing of this {kind} was written; "
                                     "free some space and run it again") from None
            raise
        return {"id": rec_id, "kind": kind, "created": created, **meta}

    def staging(self, kind: str) -> Path:
        """A fresh path beside `kind`'s artifacts for a large file written in pieces, then given to
        `put` as a Path; the caller removes it if it never gets there."""
        folder = self.artifacts / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f".staged-{secrets.token_hex(6)}.tmp"

    def _exists(self, rec_id: str) -> bool:
        with self.connect() as con:
            return con.execute("SELECT 1 FROM records WHERE id = ?", (rec_id,)).fetchone() is not None

    @staticmethod
    def _record(row: sqlite3.Row) -> dict:
        """A catalog row as its record, brought up to date (records.read)."""
        return records.read(row["kind"], {"id": row["id"], "kind": row["kind"], "created": row["created"],
                                          **json.loads(row["meta"])})

    def get(self, rec_id: str, kind: str | None = None) -> dict:
        with self.connect() as con:
            row = con.execute("SELECT * FROM records WHERE id = ?", (rec_id,)).fetchone()
        if row is None or (kind is not None and row["kind"] != kind):
            what = kind.replace("_", " ") if kind else "record"
            raise WorkspaceError(f"no {what} with id {rec_id!r} in {self.path}")
        return self._record(row)

    def find(self, kind: str, **where) -> list[dict]:
        """Records of one kind, oldest first, whose meta matches every `where` item."""
        with self.connect() as con:
            rows = con.execute("SELECT * FROM records WHERE kind = ? ORDER BY created", (kind,)).fetchall()
        records = [self._record(r) for r in rows]
        return [r for r in records if all(r.get(k) == v for k, v in where.items())]

    def read(self, record: dict, name: str) -> Path:
        path = self.artifact(record["kind"], record["id"], name)
        if not path.exists():
            raise WorkspaceError(f"{record['id']} has no artifact {name!r}: {path} is missing; make that record again")
        return path

    def counts(self) -> dict[str, int]:
        with self.connect() as con:
            rows = con.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind").fetchall()
            jobs = con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return {**{k: 0 for k in KINDS}, **{r[0]: r[1] for r in rows}, "job": jobs}
