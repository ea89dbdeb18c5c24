"""Opening a store: URLs, default location, and one-line errors instead of tracebacks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pg import PgServer
from vmlab.errors import HostError, UsageError
from vmlab.results.store import Store, resolve_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_default_store_is_created_under_dot_vmlab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Store.open() as store:
        assert store.schema_revision() is not None
    assert (tmp_path / ".vmlab" / "results.db").is_file()


def test_a_bare_path_is_an_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "r.db"
    with Store.open(path) as store:
        assert store.url == f"sqlite:///{path}"
    with Store.open(str(path)):
        pass
    assert path.is_file()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:secret@db.example:5433/lab", "postgresql+psycopg"),
        ("postgres://u@db.example/lab", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example/lab", "postgresql+psycopg"),
        ("sqlite:///rel/results.db", "sqlite"),
        ("sqlite://", "sqlite"),
    ],
)
def test_urls_map_to_drivers(given: str, driver: str) -> None:
    url = resolve_url(given)
    assert url.drivername == driver
    if driver == "sqlite" and url.database:
        assert Path(url.database).is_absolute()


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u@h/db", "driver 'psycopg2' is not supported"),
        ("sqlite+aiosqlite:///x.db", "driver 'aiosqlite' is not supported"),
    ],
)
def test_unsupported_urls_are_usage_errors(given: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        Store.open(given)


def test_a_refused_connection_is_one_line_without_the_password() -> None:
    url = f"postgresql://vmlab:hunter2@127.0.0.1:{_free_port()}/results"
    with pytest.raises(HostError) as caught:
        Store.open(url)
    message = caught.value.message
    assert message == (
        f"cannot open results store postgresql://vmlab:***@127.0.0.1:{url.rsplit(':', 1)[1]}:"
        " connection refused (is the server running?)"
    )
    assert "hunter2" not in message
    assert "refused" in caught.value.details.lower()


def test_a_missing_server_socket_says_so(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"no server socket \(is the server running\?\)$"):
        Store.open(f"postgresql://postgres@/results?host={tmp_path}")


def test_a_missing_database_is_a_usage_error(pg_server: PgServer) -> None:
    with pytest.raises(UsageError) as caught:
        Store.open(pg_server.url("no_such_db"))
    message = caught.value.message
    assert message.startswith("cannot open results store postgresql://")
    assert message.endswith('database "no_such_db" does not exist')
    assert "\n" not in message


def test_an_sqlite_directory_that_cannot_exist_is_a_host_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(HostError, match=r"cannot open results store .*: cannot create .*/file/sub"):
        Store.open(blocker / "sub" / "results.db")


def test_a_file_that_is_not_a_database_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_bytes(b"this is no sqlite file, just some text of sufficient length" * 40)
    with pytest.raises(UsageError, match=r"is not an SQLite database$"):
        Store.open(path)


def test_a_schema_from_a_newer_vmlab_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with Store.open(path) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(UsageError, match="schema is unknown to this vmlab"):
        Store.open(path)
