"""The results store's schema. Bump ``SCHEMA_VERSION`` and append a migration for any change.

Tables (JSON columns hold nested records; every energy number sits next to its method label):

- ``runs``: one per command invocation (measure, profile, sweep, load, reproduce…): config,
  environment, meter description, status and a JSON summary.
- ``cells``: one per grid point of a sweep (or the single cell of a profile); ``cell_key`` is a
  stable hash of the cell's config, so a resumed sweep skips ``done`` cells and redoes others.
- ``repeats``: every measured repeat of every phase (warm-ups flagged), never only the mean.
- ``requests``: one per request of a load test, with timings, tokens, status and energy.
- ``timelines``: power-timeline samples (cumulative energy per domain).
- ``audits``: every audit check with its verdict, failing ones included.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            name VARCHAR,
            created_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            status VARCHAR NOT NULL,
            config JSON,
            environment JSON,
            meter JSON,
            summary JSON
        )
        """,
        """
        CREATE TABLE cells (
            run_id VARCHAR NOT NULL,
            cell_key VARCHAR NOT NULL,
            study VARCHAR,
            status VARCHAR NOT NULL,
            config JSON,
            result JSON,
            error VARCHAR,
            started_at TIMESTAMP,
            finished_at TIMESTAMP,
            PRIMARY KEY (run_id, cell_key)
        )
        """,
        """
        CREATE TABLE repeats (
            run_id VARCHAR NOT NULL,
            cell_key VARCHAR NOT NULL,
            phase VARCHAR NOT NULL,
            method VARCHAR NOT NULL,
            idx INTEGER NOT NULL,
            warmup BOOLEAN NOT NULL,
            n_ops INTEGER,
            duration_s DOUBLE,
            energy_j DOUBLE,
            net_energy_j DOUBLE,
            tokens JSON,
            domains JSON
        )
        """,
        """
        CREATE TABLE requests (
            run_id VARCHAR NOT NULL,
            idx INTEGER NOT NULL,
            status VARCHAR NOT NULL,
            http_status INTEGER,
            error VARCHAR,
            intended_send_s DOUBLE,
            actual_send_s DOUBLE,
            first_token_s DOUBLE,
            end_s DOUBLE,
            ttft_ms DOUBLE,
            tpot_ms DOUBLE,
            e2e_ms DOUBLE,
            queue_ms DOUBLE,
            input_tokens INTEGER,
            output_tokens INTEGER,
            energy_j DOUBLE,
            energy_method VARCHAR,
            extra JSON,
            PRIMARY KEY (run_id, idx)
        )
        """,
        """
        CREATE TABLE timelines (
            run_id VARCHAR NOT NULL,
            t_s DOUBLE NOT NULL,
            domain VARCHAR NOT NULL,
            energy_j DOUBLE NOT NULL,
            method VARCHAR
        )
        """,
        """
        CREATE TABLE audits (
            run_id VARCHAR NOT NULL,
            cell_key VARCHAR,
            check_name VARCHAR NOT NULL,
            passed BOOLEAN NOT NULL,
            detail VARCHAR
        )
        """,
    ],
}

TABLES = ("runs", "cells", "repeats", "requests", "timelines", "audits")
