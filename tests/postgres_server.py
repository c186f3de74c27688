"""A throwaway PostgreSQL cluster for tests: Debian's `postgresql` binaries (initdb, pg_ctl), a data
directory in a fresh temp folder, listening only on 127.0.0.1 on a free port, trust authentication
(loopback only, deleted afterwards). initdb refuses to run as root, so as root the cluster belongs to
the `postgres` system user that the Debian package creates."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.moto_server import free_port


def postgres_bin_dir() -> Path | None:
    """Folder with initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file() and Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    return None


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise RuntimeError("running as root and there is no `postgres` user to own the cluster") from e
    runuser = shutil.which("runuser") or shutil.which("su")
    if runuser and runuser.endswith("runuser"):
        return [runuser, "-u", "postgres", "--"]
    raise RuntimeError("running as root without runuser")


@contextmanager
def postgres_cluster(db_name: str = "dagster") -> Iterator[dict]:
    """Yield connection settings {host, port, user, db_name, password} of a running cluster."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    prefix = _run_as()
    base = Path(tempfile.mkdtemp(prefix="empathy-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if prefix:
        pw = pwd.getpwnam("postgres")
        for p in (base, sockets):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    user = "postgres" if prefix else pwd.getpwuid(os.geteuid()).pw_name
    port = free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        import psycopg2

        deadline = time.time() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db_name}"')
        conn.close()
        yield {
            "host": "127.0.0.1",
            "port": port,
            "user": user,
            "db_name": db_name,
            "password": "unused",
            "log": base / "server.log",
        }
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            env=env,
        )
        shutil.rmtree(base, ignore_errors=True)


def pg_query(settings: dict, query: str, *args) -> list[tuple]:
    """Rows of one SQL query against a `postgres_cluster()` database (its settings dict)."""
    import psycopg2

    with (
        psycopg2.connect(
            host=settings["host"], port=settings["port"], user=settings["user"], dbname=settings["db_name"]
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(query, args)
        return cur.fetchall()
