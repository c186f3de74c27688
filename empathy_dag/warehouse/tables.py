"""Warehouse tables written by the automation layer (not by assets): `landing_log` (one row per landing
event: a file version seen, skipped, refused or deleted; append-only history), `run_history` (one row per finished run) and `promotion_log` (one
row per promotion decision). Every insert is keyed, so a sensor tick repeated after a crash writes
nothing twice."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import duckdb

# The DuckDB schema every table of the warehouse lives in.
WAREHOUSE_SCHEMA = "main"

AUTOMATION_TABLES = ("landing_log", "run_history", "promotion_log")

DDL = {
    "landing_log": f"""
        CREATE TABLE IF NOT EXISTS {WAREHOUSE_SCHEMA}.landing_log (
            file VARCHAR NOT NULL,    -- printable name, relative to the landing zone
            uri VARCHAR,
            sha256 VARCHAR NOT NULL,  -- '' for a path that is not read
            version VARCHAR NOT NULL, -- mtime_ns / ETag of the file version ('deleted:...' for a deletion)
            size_bytes BIGINT,
            detected_at TIMESTAMP,
            event VARCHAR,            -- added | replaced | touched | copied | restored | deleted | skipped
            outcome VARCHAR,          -- accepted | rejected | duplicate_content | deleted | skipped | refused | error
            rows_in BIGINT,
            valid_rows BIGINT,
            quarantined_rows BIGINT,
            reasons VARCHAR,          -- JSON {{reason_code: count}}
            emotions VARCHAR,         -- comma-separated, taxonomy order
            rebuilt_emotions VARCHAR, -- this content's and the replaced/deleted content's emotions
            previous_sha256 VARCHAR,
            run_keys VARCHAR,         -- comma-separated run keys requested for this file
            message VARCHAR,
            -- Append-only history: a re-dropped file (new version) adds a row; a replayed tick adds none.
            PRIMARY KEY (file, sha256, version)
        )""",
    "run_history": f"""
        CREATE TABLE IF NOT EXISTS {WAREHOUSE_SCHEMA}.run_history (
            run_id VARCHAR PRIMARY KEY,
            job_name VARCHAR,
            status VARCHAR,           -- SUCCESS | FAILURE | CANCELED
            started_at TIMESTAMP,
            ended_at TIMESTAMP,
            duration_s DOUBLE,
            assets VARCHAR,           -- JSON list of materialized asset keys
            partitions VARCHAR,       -- JSON list of materialized partition keys
            n_materializations BIGINT,
            trigger VARCHAR,
            tags VARCHAR,             -- JSON of the run's tags
            error VARCHAR
        )""",
    "promotion_log": f"""
        CREATE TABLE IF NOT EXISTS {WAREHOUSE_SCHEMA}.promotion_log (
            decided_at TIMESTAMP,
            run_id VARCHAR,
            candidate_path VARCHAR,
            candidate_sha256 VARCHAR,
            previous_sha256 VARCHAR,
            promoted BOOLEAN,
            reasons VARCHAR,          -- JSON list
            candidate_metrics VARCHAR,
            promoted_metrics VARCHAR,
            decision VARCHAR,         -- promoted | rejected | kept | no_evidence
            versus VARCHAR,           -- the system compared with: promoted (the promoted model) or the baseline
            evidence VARCHAR,         -- JSON list: the paired comparison of each headline metric
            PRIMARY KEY (run_id, candidate_sha256)
        )""",
}
# Columns added after a table's first version: a warehouse written by an older version gains them.
ADDED_COLUMNS = {"promotion_log": (("decision", "VARCHAR"), ("versus", "VARCHAR"), ("evidence", "VARCHAR"))}


def ensure_tables(conn: duckdb.DuckDBPyConnection, names: Iterable[str] = AUTOMATION_TABLES) -> None:
    for name in names:
        conn.execute(DDL[name])
        for column, dtype in ADDED_COLUMNS.get(name, ()):
            conn.execute(f"ALTER TABLE {WAREHOUSE_SCHEMA}.{name} ADD COLUMN IF NOT EXISTS {column} {dtype}")


def _value(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else v


def upsert(conn: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> int:
    """INSERT OR REPLACE by the table's primary key: replaying a row is a no-op."""
    if not rows:
        return 0
    ensure_tables(conn, [table])
    columns = list(rows[0])
    placeholders = ", ".join("?" for _ in columns)
    conn.executemany(
        f"INSERT OR REPLACE INTO {WAREHOUSE_SCHEMA}.{table} ({', '.join(columns)}) VALUES ({placeholders})",
        [[_value(r[c]) for c in columns] for r in rows],
    )
    return len(rows)


def append_landing_log(conn: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> int:
    """Append landing events. A `landing_log` written before it became a history (keyed by file and
    sha256 only, one row per file overwritten in place) is kept as `landing_log_v1` and its rows are
    carried over, so the history starts with everything that was known."""
    table = f"{WAREHOUSE_SCHEMA}.landing_log"
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'landing_log'",
        [WAREHOUSE_SCHEMA],
    ).fetchone()[0]
    if exists:
        columns = {r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()}
        if "version" not in columns:
            conn.execute(f"ALTER TABLE {table} RENAME TO landing_log_v1")
            ensure_tables(conn, ["landing_log"])
            old = sorted(columns)
            conn.execute(
                f"INSERT INTO {table} ({', '.join(old)}, version) "
                f"SELECT {', '.join(old)}, 'v1' FROM {WAREHOUSE_SCHEMA}.landing_log_v1"
            )
    return upsert(conn, "landing_log", rows)


def read_table(conn: duckdb.DuckDBPyConnection, table: str):
    ensure_tables(conn, [table])
    return conn.execute(f"SELECT * FROM {WAREHOUSE_SCHEMA}.{table}").pl()
