"""The results database: every run (measured or simulated) in one embedded SQLite file.

Default ``$PHASEBENCH_HOME/results.db`` (``~/.phasebench/results.db``); ``PHASEBENCH_DB`` or ``--db`` to change,
``PHASEBENCH_DB=off`` to disable. WAL mode, a busy timeout, and one transaction per run, so two processes
writing at once queue instead of corrupting it. The schema is versioned (``PRAGMA user_version``) and migrated
forward on open. The run folder stays the source of truth: a database that cannot be written costs a warning,
never a run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from .paths import home
from .records import RequestRecord, parse_record
from .results import Manifest, NotARunError, Run, SpecRecord, TargetInfo, as_manifest, as_summary

# one row of the requests table as Store.record inserts it: record index, the record as JSON, TTFT, TPOT, E2E
# (ms, None where undefined) and the error type
RequestRow = tuple[int, str, float | None, float | None, float | None, str | None]

# Each entry migrates from version i to i + 1. Never edit a shipped entry: append a new one.
MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        parent_id TEXT,
        path TEXT,
        kind TEXT,
        scenario TEXT,
        model TEXT,
        target TEXT,
        created TEXT,
        simulated INTEGER NOT NULL DEFAULT 0,
        valid INTEGER,
        completed INTEGER,
        failed INTEGER,
        manifest TEXT NOT NULL,
        summary TEXT NOT NULL,
        imported_at TEXT DEFAULT (datetime('now'))
    );
    CREATE TABLE requests (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, idx)
    );
    CREATE INDEX runs_model ON runs(model);
    CREATE INDEX runs_created ON runs(created);
    CREATE INDEX runs_scenario ON runs(scenario);
    """,
    # 1 -> 2: hardware and engine as columns (for history filters); per-request metrics as columns for queries
    """
    ALTER TABLE runs ADD COLUMN hardware TEXT;
    ALTER TABLE runs ADD COLUMN engine TEXT;
    ALTER TABLE requests ADD COLUMN ttft_ms REAL;
    ALTER TABLE requests ADD COLUMN tpot_ms REAL;
    ALTER TABLE requests ADD COLUMN e2e_ms REAL;
    ALTER TABLE requests ADD COLUMN error_type TEXT;
    CREATE INDEX runs_hardware ON runs(hardware);
    CREATE INDEX runs_parent ON runs(parent_id);
    """,
    # 2 -> 3: a run's tags (run --tag k=v, from the manifest's spec), one row each, for history --tag
    """
    CREATE TABLE tags (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    CREATE INDEX tags_key_value ON tags(key, value);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# record_run runs PRAGMA quick_check first on databases up to this size (it reads every page: 0.15 s for a
# 157 MB file here, warm cache)
CHECK_BEFORE_WRITE_BYTES = 1 << 30


class StoreError(RuntimeError):
    """The database cannot be opened, read or written (locked, read-only, damaged, too new)."""


class DamagedStoreError(StoreError):
    """SQLite says the file is not a database or its pages are malformed."""


def damaged_message(path: Path, detail: object) -> str:
    detail = str(detail)
    detail = detail if len(detail) <= 120 else detail[:117] + "..."
    return (f"results database {path} is damaged ({detail}): move it aside (e.g. mv {path} {path}.damaged) and "
            f"phasebench starts a new one, then `phasebench import` your run folders into it; or point --db "
            f"(or PHASEBENCH_DB) at another file. Run folders are not affected.")


def _is_damage(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return isinstance(e, sqlite3.DatabaseError) and any(
        w in text for w in ("malformed", "not a database", "corrupt", "disk image", "file is encrypted",
                            "could not decode"))


def default_path() -> Path | None:
    env = os.environ.get("PHASEBENCH_DB")
    if env and env.lower() in ("off", "none", "0"):
        return None
    return Path(env) if env else home() / "results.db"


def run_id(run: Run) -> str:
    """Stable per run: the folder's absolute path and creation time (re-importing updates, never duplicates)."""
    m = as_manifest(run.manifest)   # the object stored, as it is now (not the view made when the Run was)
    created = m.created if "created" in m.model_fields_set else ""
    t0 = m.t0_monotonic_ns if "t0_monotonic_ns" in m.model_fields_set else ""
    key = f"{run.path.resolve() if run.path else ''}|{created}|{t0}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _j(obj: Any) -> str:
    return json.dumps(obj, default=str)


class Store:
    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.db: sqlite3.Connection | None = None
        try:
            if self.path.is_dir():
                raise StoreError(f"results database {self.path} is a folder; --db needs a file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.guard():
                self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                self._migrate()
        except OSError as e:
            self.close()
            raise StoreError(f"results database {self.path}: {e}") from None
        except BaseException:
            self.close()
            raise

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Every SQLite failure inside becomes a one-line ``StoreError``; damage names the file and the fix."""
        try:
            yield
        except sqlite3.Error as e:
            if _is_damage(e):
                raise DamagedStoreError(damaged_message(self.path, e)) from None
            raise StoreError(f"results database {self.path}: {e}") from None
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise DamagedStoreError(damaged_message(self.path, f"a stored row is not readable: {e}")) from None

    def check(self) -> None:
        """``PRAGMA quick_check``: refuses a database with damaged pages (``DamagedStoreError``)."""
        assert self.db is not None
        with self.guard():
            rows = [r[0] for r in self.db.execute("PRAGMA quick_check(5)").fetchall()]
        if rows != ["ok"]:
            raise DamagedStoreError(damaged_message(self.path, "; ".join(map(str, rows))[:300]))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    @property
    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        v = self.version
        if v > SCHEMA_VERSION:
            raise StoreError(f"schema version {v} is newer than this phasebench ({SCHEMA_VERSION}); upgrade phasebench")
        if v == SCHEMA_VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            v = self.version  # another process may have migrated while we waited for the lock
            for i in range(v, SCHEMA_VERSION):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                if i == 1:
                    self._backfill_v2()
                if i == 2:
                    self._backfill_v3()
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _backfill_v2(self) -> None:
        for rid, manifest in self.db.execute("SELECT id, manifest FROM runs").fetchall():
            hw, eng = _hw_engine(as_manifest(json.loads(manifest)))
            self.db.execute("UPDATE runs SET hardware=?, engine=? WHERE id=?", (hw, eng, rid))
        for rid, idx, rec in self.db.execute("SELECT run_id, idx, record FROM requests").fetchall():
            self.db.execute("UPDATE requests SET ttft_ms=?, tpot_ms=?, e2e_ms=?, error_type=? WHERE run_id=? AND idx=?",
                            (*_metrics(RequestRecord.from_dict(json.loads(rec))), rid, idx))

    def _backfill_v3(self) -> None:
        for rid, manifest in self.db.execute("SELECT id, manifest FROM runs").fetchall():
            self._insert_tags(rid, as_manifest(json.loads(manifest)))

    def _insert_tags(self, rid: str, manifest: Manifest) -> None:
        self.db.executemany("INSERT OR REPLACE INTO tags (run_id, key, value) VALUES (?,?,?)",
                            ((rid, k, v) for k, v in run_tags(manifest).items()))

    # --- writing ---------------------------------------------------------------------------------------
    def record(self, run: Run, parent: str | None = None, request_rows: Iterable[RequestRow] | None = None) -> str:
        """Insert or replace a run (and, for sweeps and plans, each child) in one transaction. ``request_rows``:
        the run's request rows already made (the simulator's, from its arrays: ``sim.columns.db_rows``) instead
        of from ``run.records``."""
        with self.guard():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                rid = self._insert(run, parent, request_rows)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        return rid

    def _insert(self, run: Run, parent: str | None, request_rows: Iterable[RequestRow] | None = None) -> str:
        m, s = as_manifest(run.manifest), as_summary(run.summary)   # typed from the very objects stored below
        rid = run_id(run)
        spec, target = m.spec or SpecRecord(), m.target or TargetInfo()
        hw, eng = _hw_engine(m)
        self.db.execute("DELETE FROM runs WHERE id=?", (rid,))
        self.db.execute(
            "INSERT INTO runs (id, parent_id, path, kind, scenario, model, target, created, simulated, valid, completed,"
            " failed, manifest, summary, hardware, engine) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (rid, parent, str(run.path.resolve()) if run.path else None, m.kind if "kind" in m.model_fields_set else "run",
             spec.scenario, m.model, target.url or spec.url, m.created, int(bool(m.simulated)),
             int(run.valid), s.completed, s.failed, _j(run.manifest), _j(run.summary), hw, eng))
        self._insert_tags(rid, m)
        rows = ((r.index, orjson.dumps(r).decode(), *_metrics(r)) for r in run.records) if request_rows is None \
            else request_rows
        self.db.executemany(
            "INSERT INTO requests (run_id, idx, record, ttft_ms, tpot_ms, e2e_ms, error_type) VALUES (?,?,?,?,?,?,?)",
            ((rid, *row) for row in rows))
        for child in run.children:
            self._insert(child, rid)
        return rid

    # --- reading ---------------------------------------------------------------------------------------
    def history(self, model: str | None = None, target: str | None = None, hardware: str | None = None,
                scenario: str | None = None, since: str | None = None, until: str | None = None,
                top_only: bool = True, limit: int = 50, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Recorded runs, newest first; ``tags``: only runs with every one of these key=value tags."""
        with self.guard():
            return self._history(model, target, hardware, scenario, since, until, top_only, limit, tags or {})

    def _history(self, model: str | None, target: str | None, hardware: str | None, scenario: str | None,
                 since: str | None, until: str | None, top_only: bool, limit: int,
                 tags: dict[str, str]) -> list[dict[str, Any]]:
        where, args = [], []
        for key, value in tags.items():
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_id = runs.id AND t.key = ? AND t.value = ?)")
            args += [key, value]
        for col, val in (("model", model), ("target", target), ("hardware", hardware), ("scenario", scenario)):
            if val:
                where.append(f"{col} LIKE ?")
                args.append(f"%{val}%")
        if since:  # datetime() compares instants, whatever offset each timestamp was written with
            where.append("datetime(created) >= datetime(?)")
            args.append(since)
        if until:
            where.append("datetime(created) <= datetime(?)")
            args.append(until)
        if top_only:
            where.append("parent_id IS NULL")
        sql = ("SELECT id, created, kind, scenario, model, target, hardware, engine, simulated, valid, completed, failed,"
               " path, summary FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created DESC LIMIT ?")
        rows = self.db.execute(sql, (*args, limit)).fetchall()
        keys = ("id", "created", "kind", "scenario", "model", "target", "hardware", "engine", "simulated", "valid",
                "completed", "failed", "path")
        out = []
        for row in rows:
            d = dict(zip(keys, row[:-1]))
            if d["completed"] is None:  # a sweep or plan: the sum of its steps
                d["completed"], d["failed"] = self.db.execute(
                    "SELECT SUM(completed), SUM(failed) FROM runs WHERE parent_id=?", (d["id"],)).fetchone()
            s = as_summary(json.loads(row[-1]))
            d |= {k: getattr(s, k) for k in ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "output_throughput",
                                        "request_goodput")}
            d["tags"] = dict(self.db.execute("SELECT key, value FROM tags WHERE run_id=? ORDER BY key", (d["id"],)))
            out.append(d)
        return out

    def find(self, ref: str) -> str:
        """A run id from an id prefix or a run folder path."""
        with self.guard():
            return self._find(ref)

    def _find(self, ref: str) -> str:
        p = Path(ref)
        if p.exists():
            row = self.db.execute("SELECT id FROM runs WHERE path=? ORDER BY created DESC", (str(p.resolve()),)).fetchone()
            if row:
                return row[0]
        rows = self.db.execute("SELECT id FROM runs WHERE id LIKE ?", (ref + "%",)).fetchall()
        if len(rows) == 1:
            return rows[0][0]
        raise StoreError(f"{ref!r} matches {len(rows)} runs in {self.path}" if rows else f"no run {ref!r} in {self.path}")

    def load(self, rid: str) -> Run:
        with self.guard():
            return self._load(rid)

    def _load(self, rid: str) -> Run:
        row = self.db.execute("SELECT path, manifest, summary FROM runs WHERE id=?", (rid,)).fetchone()
        if row is None:
            raise StoreError(f"no run {rid} in {self.path}")
        recs = [parse_record(r) for (r,) in
                self.db.execute("SELECT record FROM requests WHERE run_id=? ORDER BY idx", (rid,))]
        children = [self._load(c) for (c,) in
                    self.db.execute("SELECT id FROM runs WHERE parent_id=? ORDER BY path", (rid,)).fetchall()]
        return Run(Path(row[0]) if row[0] else None, json.loads(row[1]), json.loads(row[2]), recs, children)

    def count(self) -> tuple[int, int]:
        with self.guard():
            return (self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0],
                    self.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


def _metrics(r: RequestRecord) -> tuple[float | None, float | None, float | None, str | None]:
    from .metrics import e2e_ms, tpot_ms, ttft_ms

    return ttft_ms(r), tpot_ms(r), e2e_ms(r), r.error_type


def run_tags(manifest: Manifest) -> dict[str, str]:
    """A run's tags as its manifest holds them (``spec.tags``; none in runs older than ``--tag``)."""
    tags = (manifest.spec.tags if manifest.spec else None) or {}
    return {str(k): str(v) for k, v in tags.items()}


def _hw_engine(m: Manifest) -> tuple[str | None, str | None]:
    hw = (m.spec.hardware if m.spec else None) or ("local" if m.model_file else None)
    if m.simulated:
        hw = (m.simulation.hardware if m.simulation else None) or hw
    eng = (m.engine.name if m.engine else None) or ("simulator" if m.simulated else None)
    return hw, eng


def record_run(run: Run, db: Path | None | str = "default",
               request_rows: Iterable[RequestRow] | None = None) -> tuple[str | None, str | None]:
    """Record a finished run; returns (id, warning). Never raises: the run folder already holds everything.
    ``request_rows``: as :meth:`Store.record` takes them."""
    path = default_path() if db == "default" else (Path(db) if db else None)
    if path is None:
        return None, None
    from .textsafe import clean

    try:
        with Store(path) as st:
            if path.exists() and path.stat().st_size <= CHECK_BEFORE_WRITE_BYTES:
                st.check()  # never write into a damaged file: that can spread the damage
            return st.record(run, request_rows=request_rows), None
    except DamagedStoreError as e:
        return None, clean(f"not recorded: {e}")
    except (StoreError, sqlite3.Error, OSError, ValueError, TypeError) as e:
        return None, clean(f"not recorded in the results database: {e} (the run folder is complete; "
                           "`phasebench import` it later)")


# --- export ----------------------------------------------------------------------------------------------
REQUEST_COLUMNS = ("index", "status", "error_type", "error", "input_tokens", "prompt_tokens", "output_tokens",
                   "ttft_ms", "ttft_sent_ms", "tpot_ms", "e2e_ms", "scheduled_ns", "sent_ns", "first_token_ns",
                   "last_token_ns", "end_ns", "retries", "warmup", "finish_reason")
SUMMARY_COLUMNS = ("id", "created", "kind", "scenario", "model", "target", "hardware", "engine", "simulated", "valid",
                   "completed", "failed", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "output_throughput",
                   "request_goodput", "path")


def request_table(records: Sequence[RequestRecord]) -> list[dict[str, Any]]:
    from .metrics import e2e_ms, tpot_ms, ttft_ms, ttft_sent_ms

    rows = []
    for r in records:
        d = asdict(r)
        d |= {"ttft_ms": ttft_ms(r), "ttft_sent_ms": ttft_sent_ms(r), "tpot_ms": tpot_ms(r), "e2e_ms": e2e_ms(r)}
        rows.append({k: d.get(k) for k in REQUEST_COLUMNS})
    return rows


def write_table(rows: list[dict[str, Any]], columns: Sequence[str], out: Path, fmt: str) -> None:
    if fmt == "csv":
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        with open(out, "w") as f:
            for r in rows:
                f.write(json.dumps({k: r.get(k) for k in columns}, default=str) + "\n")
    elif fmt == "parquet":
        try:
            import pyarrow as pa  # type: ignore[import-not-found]
            import pyarrow.parquet as pq  # type: ignore[import-not-found]
        except ImportError:
            raise StoreError("parquet export needs pyarrow: pip install 'phasebench[parquet]'") from None
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows]), out)
    else:
        raise StoreError(f"unknown export format {fmt!r} (csv, jsonl, parquet)")


def import_folder(path: Path, db: Path | None = None) -> tuple[str, list[str]]:
    """Add a run folder (with its steps) to the database; returns its id and what ``Run.load`` found damaged.
    A ``vllm bench serve --save-result`` JSON file is first turned into a run folder beside it."""
    if Path(path).is_file():
        from .importers import import_vllm_bench

        path = import_vllm_bench(Path(path)).path or path
    run = Run.load(path)
    if run.meta.kind is None and not run.summary:
        raise NotARunError(f"{path} is not a run folder")
    with Store(db or default_path() or home() / "results.db") as st:
        return st.record(run), run.load_warnings
