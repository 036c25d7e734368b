"""DuckDB results store: versioned schema, runs, cells (resumable sweeps), repeats, requests.

Default location ``./joulebench-results/results.duckdb``. Opening a store written by a newer
joulebench is an error (never a silent misread). Writes are committed immediately, so a killed
process loses at most the cell it was in.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from joulebench.errors import StoreError
from joulebench.results.schema import MIGRATIONS, SCHEMA_VERSION, TABLES

DEFAULT_STORE = Path("joulebench-results") / "results.duckdb"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early (before any measured work) if the store cannot be created or written."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {p.parent}: {exc.strerror}") from exc
    target = p if p.exists() else p.parent
    if not os.access(target, os.W_OK):
        raise StoreError(
            f"the results store {p} is not writable (check permissions or pass --store)"
        )
    if p.exists() and p.is_dir():
        raise StoreError(f"the results store path {p} is a directory; pass a file path")
    return p


class ResultStore:
    """A DuckDB file holding every run joulebench made. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_STORE, *, read_only: bool = False):
        duckdb = __import__("duckdb")
        self.path = Path(path)
        if str(path) == ":memory:":  # an in-process store (a sweep worker's scratch space)
            pass
        elif read_only:
            if not self.path.exists():
                raise StoreError(f"no results store at {self.path}")
        else:
            check_writable(self.path)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the results store {self.path}: {exc}") from exc
        self._migrate(read_only)

    # -- schema ----------------------------------------------------------------------------
    def _migrate(self, read_only: bool) -> None:
        has_version = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchone()[0]
        current = 0
        if has_version:
            row = self.con.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0] or 0)
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, but this joulebench knows only up to "
                f"{SCHEMA_VERSION}: upgrade joulebench to read it"
            )
        if current == SCHEMA_VERSION:
            return
        if read_only:
            raise StoreError(f"{self.path} has an old schema ({current}); open it writable once")
        if not has_version:
            self.con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMP)")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                self.con.execute(statement)
            self.con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])

    @property
    def schema_version(self) -> int:
        return int(self.con.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    # -- runs --------------------------------------------------------------------------------
    def start_run(
        self,
        kind: str,
        *,
        config: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        meter: Mapping[str, Any] | None = None,
        name: str | None = None,
        run_id: str | None = None,
    ) -> str:
        run_id = run_id or f"{kind}-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.con.execute(
            "INSERT INTO runs (run_id, kind, name, created_at, status, config, environment, meter)"
            " VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
            [run_id, kind, name, _now(), _json(config), _json(environment), _json(meter)],
        )
        return run_id

    def finish_run(
        self, run_id: str, *, status: str = "done", summary: Mapping[str, Any] | None = None
    ) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
            [status, _now(), _json(summary), run_id],
        )

    def set_run_summary(self, run_id: str, summary: Mapping[str, Any]) -> None:
        """Replace a finished run's summary (a launched engine's exit status, known later)."""
        self.con.execute("UPDATE runs SET summary = ? WHERE run_id = ?", [_json(summary), run_id])

    def set_run_status(self, run_id: str, status: str) -> None:
        """Mark a run (``running`` again when a sweep resumes)."""
        self.con.execute("UPDATE runs SET status = ? WHERE run_id = ?", [status, run_id])

    def find_run(self, kind: str, name: str) -> str | None:
        """Latest run of ``kind`` called ``name`` (used to resume a sweep)."""
        row = self.con.execute(
            "SELECT run_id FROM runs WHERE kind = ? AND name = ? ORDER BY created_at DESC LIMIT 1",
            [kind, name],
        ).fetchone()
        return None if row is None else str(row[0])

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY created_at"
        return self.query(sql, [kind] if kind else [])

    # -- cells (resumable) ---------------------------------------------------------------------
    def cell_status(self, run_id: str, cell_key: str) -> str | None:
        row = self.con.execute(
            "SELECT status FROM cells WHERE run_id = ? AND cell_key = ?", [run_id, cell_key]
        ).fetchone()
        return None if row is None else str(row[0])

    def start_cell(
        self, run_id: str, cell_key: str, config: Mapping[str, Any], study: str | None = None
    ) -> None:
        """Mark a cell running, discarding what an interrupted earlier attempt left behind."""
        for table in ("repeats", "audits"):
            self.con.execute(
                f"DELETE FROM {table} WHERE run_id = ? AND cell_key = ?", [run_id, cell_key]
            )
        self.con.execute("DELETE FROM cells WHERE run_id = ? AND cell_key = ?", [run_id, cell_key])
        self.con.execute(
            "INSERT INTO cells (run_id, cell_key, study, status, config, started_at)"
            " VALUES (?, ?, ?, 'running', ?, ?)",
            [run_id, cell_key, study, _json(config), _now()],
        )

    def finish_cell(
        self,
        run_id: str,
        cell_key: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        status: str | None = None,
    ) -> None:
        """Close a cell: ``done`` with its result, ``failed`` with its error, or an explicit
        ``status`` (``interrupted`` for a cell cut short by Ctrl-C; a resume redoes it)."""
        status = status or ("failed" if error else "done")
        self.con.execute(
            "UPDATE cells SET status = ?, result = ?, error = ?, finished_at = ?"
            " WHERE run_id = ? AND cell_key = ?",
            [status, _json(result), error, _now(), run_id, cell_key],
        )

    def set_cells_study(self, run_id: str, study: str) -> None:
        """Label every cell of ``run_id`` with ``study`` (a sweep's cells belong to its study)."""
        self.con.execute("UPDATE cells SET study = ? WHERE run_id = ?", [study, run_id])

    # -- rows ----------------------------------------------------------------------------------
    def add_repeats(self, run_id: str, cell_key: str, rows: Iterable[Mapping[str, Any]]) -> None:
        for r in rows:
            self.con.execute(
                "INSERT INTO repeats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    cell_key,
                    r["phase"],
                    r["method"],
                    r["idx"],
                    bool(r.get("warmup")),
                    r.get("n_ops"),
                    r.get("duration_s"),
                    r.get("energy_j"),
                    r.get("net_energy_j"),
                    _json(r.get("tokens")),
                    _json(r.get("domains")),
                ],
            )

    def add_requests(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
        cols = [
            "idx",
            "status",
            "http_status",
            "error",
            "intended_send_s",
            "actual_send_s",
            "first_token_s",
            "end_s",
            "ttft_ms",
            "tpot_ms",
            "e2e_ms",
            "queue_ms",
            "input_tokens",
            "output_tokens",
            "energy_j",
            "energy_method",
        ]
        sql = (
            f"INSERT INTO requests (run_id, {', '.join(cols)}, extra) VALUES "
            f"({', '.join('?' * (len(cols) + 2))})"
        )
        for r in rows:
            extra = {k: v for k, v in r.items() if k not in cols}
            self.con.execute(sql, [run_id, *[r.get(c) for c in cols], _json(extra or None)])

    def add_timeline(
        self,
        run_id: str,
        samples: Iterable[tuple[float, Mapping[str, float]]],
        methods: Mapping[str, str],
    ) -> None:
        rows = [
            (run_id, float(t), d, float(e), methods.get(d))
            for t, energy in samples
            for d, e in energy.items()
        ]
        if rows:
            self.con.executemany("INSERT INTO timelines VALUES (?, ?, ?, ?, ?)", rows)

    def add_audits(
        self, run_id: str, cell_key: str | None, checks: Iterable[Mapping[str, Any]]
    ) -> None:
        for c in checks:
            self.con.execute(
                "INSERT INTO audits VALUES (?, ?, ?, ?, ?)",
                [run_id, cell_key, c["name"], bool(c["passed"]), c.get("detail")],
            )

    # -- moving one cell between stores (sweep workers → the driver's store) -------------------
    def _cell_tables(self) -> list[tuple[str, list[str], set[str]]]:
        """(table, columns, JSON columns) of every table that has a ``cell_key`` column."""
        out = []
        for table in TABLES:
            cols = self.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
            names = [str(c[0]) for c in cols]
            if "cell_key" in names:
                out.append((table, names, {str(c[0]) for c in cols if c[1] == "JSON"}))
        return out

    def export_cell(self, run_id: str, cell_key: str) -> dict[str, list[dict[str, Any]]]:
        """Every row of one cell, ``{table: [row dicts]}`` (cells, repeats, audits…).

        Only tables with a ``cell_key`` column hold a cell's data (timelines and requests belong
        to a run). JSON columns come back as JSON text; the result is plain, picklable data.
        """
        return {
            table: self.query(
                f"SELECT * FROM {table} WHERE run_id = ? AND cell_key = ?", [run_id, cell_key]
            )
            for table, _, _ in self._cell_tables()
        }

    def import_cell(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, str]:
        """Insert an :meth:`export_cell` export; returns its (run_id, cell_key).

        The cell's existing rows in every cell table are deleted first, in the same transaction,
        so a redone or re-imported cell never duplicates rows and a killed process never leaves
        half a cell. Rows of more than one cell, or of an unknown table, are a StoreError.
        """
        tables = {t: (cols, json_cols) for t, cols, json_cols in self._cell_tables()}
        unknown = sorted(set(rows) - set(tables))
        if unknown:
            raise StoreError(f"cannot import rows of {unknown}; cell tables: {sorted(tables)}")
        keys = {(r.get("run_id"), r.get("cell_key")) for t in rows for r in rows[t]}
        if len(keys) != 1 or not rows.get("cells"):
            raise StoreError(
                f"an imported cell needs its cells row and rows of exactly one cell, got {keys}"
            )
        run_id, cell_key = (str(k) for k in next(iter(keys)))
        self.con.begin()
        try:
            for table, (cols, json_cols) in tables.items():
                self.con.execute(
                    f"DELETE FROM {table} WHERE run_id = ? AND cell_key = ?", [run_id, cell_key]
                )
                for r in rows.get(table, ()):
                    extra = sorted(set(r) - set(cols))
                    if extra:
                        raise StoreError(f"{table} has no column(s) {extra}")
                    names = list(r)
                    values = [
                        _json(r[n]) if n in json_cols and not isinstance(r[n], str) else r[n]
                        for n in names
                    ]
                    self.con.execute(
                        f"INSERT INTO {table} ({', '.join(names)})"
                        f" VALUES ({', '.join('?' * len(names))})",
                        values,
                    )
        except BaseException as exc:
            self.con.rollback()
            if isinstance(exc, __import__("duckdb").Error):
                raise StoreError(f"cannot import cell {cell_key} of run {run_id}: {exc}") from exc
            raise
        self.con.commit()
        return run_id, cell_key

    # -- reading -------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def export(self, out_dir: str | os.PathLike[str], fmt: str = "parquet") -> list[Path]:
        """Write every table to ``out_dir`` as Parquet, CSV or JSON (one file per table)."""
        fmt = fmt.lower()
        options = {
            "parquet": "(FORMAT PARQUET)",
            "csv": "(FORMAT CSV, HEADER)",
            "json": "(FORMAT JSON, ARRAY true)",
        }
        if fmt not in options:
            raise StoreError(f"unknown export format {fmt!r}; known: {', '.join(options)}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for table in TABLES:
            target = out / f"{table}.{fmt}"
            path_sql = str(target).replace("'", "''")
            self.con.execute(f"COPY {table} TO '{path_sql}' {options[fmt]}")
            written.append(target)
        return written

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
