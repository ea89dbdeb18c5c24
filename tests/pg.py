"""A throwaway PostgreSQL server for the tests, from Debian's own binaries.

`PgServer.start()` runs `initdb` and `pg_ctl start` from /usr/lib/postgresql/N/bin
(the newest N; or $VMLAB_TEST_PG_BINDIR) on a cluster in a fresh directory under
/tmp. The server listens only on a unix socket in that directory (no TCP port, so
parallel test sessions cannot collide), trusts local connections, and runs
without fsync. As root, initdb and the server run as the `postgres` user (Debian's
package creates it), since PostgreSQL refuses to run as root. `stop()` shuts it
down at once and removes the directory.

With $VMLAB_TEST_PG_URL set (`postgresql://USER@HOST/postgres`), the tests use that
server instead: each test still gets its own database, created and dropped.

Fixtures (import them into a conftest.py):

- `pg_server` (session): the running server;
- `pg_url`: a `postgresql://` URL of a new, empty database, dropped afterwards.

Without PostgreSQL installed, `pg_server` FAILS (it does not skip): the store
must be tested against a real server, and `make test` installs one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "install Debian's postgresql package (apt-get install -y postgresql)"


def find_bindir() -> Path | None:
    """Directory of initdb/pg_ctl: $VMLAB_TEST_PG_BINDIR or the newest Debian one."""
    given = os.environ.get("VMLAB_TEST_PG_BINDIR")
    if given:
        return Path(given)
    found = sorted(
        (p.parent for p in PG_ROOT.glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0],
    )
    return found[-1] if found else None


class PgServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_url: str, root: Path | None = None, bindir: Path | None = None):
        self.admin_url = admin_url  # postgresql://... of the `postgres` database
        self.root = root  # the cluster directory we own (None: an external server)
        self._bindir = bindir
        self._run_as: str | None = None
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def start(cls) -> PgServer:
        """Start a fresh cluster in a temporary directory (pytest.fail when impossible)."""
        bindir = find_bindir()
        if bindir is None or not (bindir / "initdb").exists():
            where = bindir if bindir is not None else f"{PG_ROOT}/*/bin"
            pytest.fail(
                f"PostgreSQL server binaries (initdb, pg_ctl) not found in {where}: {INSTALL_HINT}",
                pytrace=False,
            )
        run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(
                    "running as root but there is no 'postgres' user to run PostgreSQL as:"
                    f" {INSTALL_HINT}, or run the tests as a normal user",
                    pytrace=False,
                )
            run_as = "postgres"
        # as root, /tmp: the postgres user must reach it, and $TMPDIR may be private
        root = Path(tempfile.mkdtemp(prefix="vmlab-pg-", dir="/tmp" if run_as else None))
        if run_as is not None:
            account = pwd.getpwnam(run_as)
            os.chown(root, account.pw_uid, account.pw_gid)
        server = cls(
            f"postgresql://postgres@/postgres?host={root}",
            root=root,
            bindir=bindir,
        )
        server._run_as = run_as
        atexit.register(server.stop)
        try:
            server._init_and_start()
        except BaseException:
            server.stop()
            raise
        return server

    def _init_and_start(self) -> None:
        assert self.root is not None and self._bindir is not None
        data = self.root / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories='{self.root}'",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=50",
            ]
        )
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
        )

    def stop(self) -> None:
        """Stop the server we started and remove its directory (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError, pytest.fail.Exception):
                self._run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        assert self.root is not None and self._bindir is not None
        argv = [str(self._bindir / program), *args]
        extra: dict[str, Any] = {}
        if self._run_as is not None:
            extra = {"user": self._run_as, "group": self._run_as, "extra_groups": []}
        env: Mapping[str, str] = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        with (self.root / f"{program}.out").open("wb") as out:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                timeout=120,
                check=False,
                **extra,
            )
        if done.returncode != 0:
            output = (self.root / f"{program}.out").read_text(errors="replace")
            log = self.root / "server.log"
            if log.exists():
                output += "\n--- server.log ---\n" + log.read_text(errors="replace")[-4000:]
            pytest.fail(
                f"{' '.join(argv)} exited with {done.returncode}:\n{output.strip()}",
                pytrace=False,
            )

    # -- databases ------------------------------------------------------------

    def _admin(self) -> psycopg.Connection[Any]:
        url = make_url(self.admin_url)
        params: dict[str, Any] = {
            "dbname": url.database or "postgres",
            "user": url.username or "postgres",
            "autocommit": True,
            "connect_timeout": 10,
        }
        if url.password:
            params["password"] = url.password
        host = url.query.get("host") or url.host
        if host:
            params["host"] = host if isinstance(host, str) else host[0]
        if url.port:
            params["port"] = url.port
        return psycopg.connect(**params)

    def url(self, dbname: str) -> str:
        """The URL of database `dbname` on this server."""
        return make_url(self.admin_url).set(database=dbname).render_as_string(hide_password=False)

    def create_database(self) -> str:
        """Create an empty database with a fresh name and return its name."""
        name = f"vmlab_test_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session (ours, or $VMLAB_TEST_PG_URL's)."""
    external = os.environ.get("VMLAB_TEST_PG_URL")
    if external:
        yield PgServer(external)
        return
    server = PgServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The `postgresql://` URL of a new, empty database (dropped after the test)."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
