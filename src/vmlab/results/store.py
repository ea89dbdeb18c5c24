"""The results store: every run and every test result, in SQLite or PostgreSQL.

`Store.open(url)` connects and upgrades the schema to the newest Alembic revision
(the migrations ship inside this package; no alembic.ini is involved). URLs:

- nothing: `sqlite:///.vmlab/results.db` under the current directory;
- a bare path, or `sqlite:///PATH`: an SQLite file (its directory is created);
- `postgresql://USER:PASSWORD@HOST:PORT/DB` (or `postgres://`): PostgreSQL through
  psycopg 3.

Each `add_result` commits on its own, so a run that is interrupted (or killed)
keeps every result that finished. The API is blocking; async callers go through
`asyncio.to_thread`. Database failures become one-line `HostError`/`UsageError`s
naming the store, with the driver's full text in `details`.

Text is stored as given, except NUL characters (which PostgreSQL refuses):
they become U+FFFD in both backends.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.pool import StaticPool

from vmlab.errors import HostError, UsageError, VmlabError
from vmlab.results.model import (
    CrashInfo,
    Outcome,
    RunRecord,
    RunStatus,
    TestResult,
    VmSpec,
)

DEFAULT_URL: Final = "sqlite:///.vmlab/results.db"
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_PG_ADVISORY_LOCK: Final = 0x766D6C6162  # "vmlab": serialises concurrent schema upgrades
_IN_CHUNK: Final = 500  # test ids per IN (...) clause


# --------------------------------------------------------------------------- schema


class _UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The store's tables; `migrations/` creates them, this only maps them."""


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(_UtcDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(_UtcDateTime())
    status: Mapped[str] = mapped_column(sa.String(16))
    host: Mapped[str] = mapped_column(sa.String(255))
    accel: Mapped[str] = mapped_column(sa.String(16))
    qemu_version: Mapped[str] = mapped_column(sa.String(255))
    kernel_release: Mapped[str] = mapped_column(sa.String(255))
    kernel_config_hash: Mapped[str] = mapped_column(sa.String(128))
    lab_hash: Mapped[str] = mapped_column(sa.String(128))
    git_commit: Mapped[str | None] = mapped_column(sa.String(64))
    command_line: Mapped[list[str]] = mapped_column(sa.JSON)
    environment: Mapped[dict[str, str]] = mapped_column(sa.JSON)

    results: Mapped[list[ResultRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="ResultRow.id"
    )


class ResultRow(Base):
    __tablename__ = "test_results"
    __table_args__ = (sa.Index("ix_test_results_test_id_outcome", "test_id", "outcome"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    test_id: Mapped[str] = mapped_column(sa.String(1024))
    suite: Mapped[str] = mapped_column(sa.String(255))
    domain: Mapped[str] = mapped_column(sa.String(255))
    level: Mapped[int] = mapped_column(sa.Integer)
    safety: Mapped[str] = mapped_column(sa.String(32))
    machine: Mapped[str] = mapped_column(sa.String(255))
    memory_mib: Mapped[int] = mapped_column(sa.Integer)
    cpus: Mapped[int] = mapped_column(sa.Integer)
    kernel: Mapped[str] = mapped_column(sa.String(1024))
    started_at: Mapped[datetime] = mapped_column(_UtcDateTime())
    duration_s: Mapped[float] = mapped_column(sa.Float)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str] = mapped_column(sa.Text)
    output_tail: Mapped[str] = mapped_column(sa.Text)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    extra: Mapped[dict[str, str]] = mapped_column(sa.JSON)

    run: Mapped[RunRow] = relationship(back_populates="results")
    metrics: Mapped[list[MetricRow]] = relationship(
        cascade="all, delete-orphan", order_by="MetricRow.id"
    )
    artifacts: Mapped[list[ArtifactRow]] = relationship(
        cascade="all, delete-orphan", order_by="ArtifactRow.id"
    )
    crash: Mapped[CrashRow | None] = relationship(cascade="all, delete-orphan")


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (sa.UniqueConstraint("result_id", "name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(
        sa.ForeignKey("test_results.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    value: Mapped[float] = mapped_column(sa.Float)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("result_id", "name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(
        sa.ForeignKey("test_results.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    path: Mapped[str] = mapped_column(sa.Text)


class CrashRow(Base):
    __tablename__ = "crashes"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(
        sa.ForeignKey("test_results.id", ondelete="CASCADE"), unique=True
    )
    title: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.String(64))
    signature: Mapped[str] = mapped_column(sa.String(255), index=True)
    report: Mapped[str] = mapped_column(sa.Text)


# --------------------------------------------------------------------------- API


@dataclass(frozen=True)
class RunSummary:
    """One line of `vmlab runs`: a run without its results, plus their counts."""

    run_id: str
    start: datetime
    end: datetime | None
    status: RunStatus
    host: str
    accel: str
    kernel_release: str
    counts: dict[Outcome, int]  # every outcome present, maybe 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def outcome(self) -> Outcome:
        """The worst outcome among the run's results (PASSED for none)."""
        return Outcome.worst(*(o for o, n in self.counts.items() if n))

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else (self.end - self.start).total_seconds()


class Store:
    """A results database. Open it with `Store.open(url)`; use it as a context manager."""

    def __init__(self, engine: Engine, display_url: str) -> None:
        self._engine = engine
        self.url = display_url  # the URL with its password hidden, for messages

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def open(cls, url: str | Path | None = None) -> Store:
        """Connect to the store at `url` (default `.vmlab/results.db`) and migrate it to head."""
        sa_url = resolve_url(url)
        display = sa_url.set(drivername=sa_url.get_backend_name()).render_as_string(
            hide_password=True
        )
        engine = _create_engine(sa_url, display)
        store = cls(engine, display)
        try:
            store._upgrade()
        except BaseException:
            engine.dispose()
            raise
        return store

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and one-off queries)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self._errors("cannot read the schema revision of"), self._engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # -- writing --------------------------------------------------------------

    def begin_run(self, run: RunRecord) -> None:
        """Record a new run (and any results it already holds)."""
        row = RunRow(
            id=run.run_id,
            started_at=run.start,
            ended_at=run.end,
            status=run.status.value,
            host=_text(run.host),
            accel=_text(run.accel),
            qemu_version=_text(run.qemu_version),
            kernel_release=_text(run.kernel_release),
            kernel_config_hash=_text(run.kernel_config_hash),
            lab_hash=_text(run.lab_hash),
            git_commit=run.git_commit,
            command_line=[_text(a) for a in run.command_line],
            environment={_text(k): _text(v) for k, v in run.environment.items()},
        )
        row.results = [_result_row(r) for r in run.results]
        with self._errors("cannot record a run in"), self._session() as session:
            if session.get(RunRow, run.run_id) is not None:
                raise UsageError(f"run {run.run_id} already exists in {self.url}")
            session.add(row)

    def add_result(self, run_id: str, result: TestResult) -> None:
        """Record one result of a run, committed at once."""
        with self._errors("cannot record a result in"), self._session() as session:
            if session.get(RunRow, run_id) is None:
                raise UsageError(f"no run {run_id} in {self.url} to add {result.test_id} to")
            row = _result_row(result)
            row.run_id = run_id
            session.add(row)

    def finish_run(self, run_id: str, status: RunStatus, end: datetime | None = None) -> None:
        """Mark a run completed, interrupted or failed (`end` defaults to now)."""
        when = datetime.now(UTC) if end is None else end
        with self._errors("cannot finish a run in"), self._session() as session:
            row = session.get(RunRow, run_id)
            if row is None:
                raise UsageError(f"no run {run_id} in {self.url}")
            row.status = RunStatus(status).value
            row.ended_at = when

    # -- reading --------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        """The run whose id is `run_id`, or starts with it, or the newest for `latest`."""
        with self._errors("cannot read"), self._session() as session:
            row = self._find_run(session, run_id)
            return _run_record(row)

    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest `limit` runs, newest first, with their outcome counts."""
        with self._errors("cannot read"), self._session() as session:
            rows = session.scalars(
                sa.select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
            ).all()
            counts: dict[str, dict[Outcome, int]] = {
                row.id: dict.fromkeys(Outcome, 0) for row in rows
            }
            if rows:
                query = (
                    sa.select(ResultRow.run_id, ResultRow.outcome, sa.func.count())
                    .where(ResultRow.run_id.in_(list(counts)))
                    .group_by(ResultRow.run_id, ResultRow.outcome)
                )
                for run_id, outcome, n in session.execute(query):
                    counts[run_id][Outcome(outcome)] += n
            return [
                RunSummary(
                    run_id=row.id,
                    start=row.started_at,
                    end=row.ended_at,
                    status=RunStatus(row.status),
                    host=row.host,
                    accel=row.accel,
                    kernel_release=row.kernel_release,
                    counts=counts[row.id],
                )
                for row in rows
            ]

    def past_durations(self, test_ids: Iterable[str], last: int = 5) -> dict[str, float]:
        """Median duration of each test's `last` passing runs; tests never passed are absent."""
        wanted = list(dict.fromkeys(test_ids))
        found: dict[str, list[float]] = {}
        with self._errors("cannot read"), self._session() as session:
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                rank = (
                    sa.func.row_number()
                    .over(
                        partition_by=ResultRow.test_id,
                        order_by=(ResultRow.started_at.desc(), ResultRow.id.desc()),
                    )
                    .label("rank")
                )
                recent = (
                    sa.select(ResultRow.test_id, ResultRow.duration_s, rank)
                    .where(ResultRow.test_id.in_(chunk), ResultRow.outcome == Outcome.PASSED.value)
                    .subquery()
                )
                query = sa.select(recent.c.test_id, recent.c.duration_s).where(
                    recent.c.rank <= last
                )
                for test_id, duration in session.execute(query):
                    found.setdefault(test_id, []).append(duration)
        return {t: statistics.median(found[t]) for t in wanted if t in found}

    def crash_counts(self, signature: str | None = None) -> dict[str, int]:
        """How many results crashed with each signature (only `signature`'s when given)."""
        query = sa.select(CrashRow.signature, sa.func.count()).group_by(CrashRow.signature)
        if signature is not None:
            query = query.where(CrashRow.signature == signature)
        with self._errors("cannot read"), self._session() as session:
            counts = {sig: n for sig, n in session.execute(query)}
        if signature is not None:
            counts.setdefault(signature, 0)
        return counts

    # -- internals ------------------------------------------------------------

    def _find_run(self, session: Session, run_id: str) -> RunRow:
        load = selectinload(RunRow.results)
        options = (
            load.selectinload(ResultRow.metrics),
            load.selectinload(ResultRow.artifacts),
            load.selectinload(ResultRow.crash),
        )
        hint = "(`vmlab runs` lists run ids)"
        if run_id in ("latest", "last"):
            row = session.scalars(
                sa.select(RunRow)
                .options(*options)
                .order_by(RunRow.started_at.desc(), RunRow.id.desc())
                .limit(1)
            ).first()
            if row is None:
                raise UsageError(f"no runs in {self.url} yet")
            return row
        exact = session.get(RunRow, run_id, options=options)
        if exact is not None:
            return exact
        if not run_id:
            raise UsageError(f"no run id given {hint}")
        rows = session.scalars(
            sa.select(RunRow)
            .options(*options)
            .where(RunRow.id.startswith(run_id, autoescape=True))
            .order_by(RunRow.id)
            .limit(6)
        ).all()
        if not rows:
            raise UsageError(f"no run {run_id!r} in {self.url} {hint}")
        if len(rows) > 1:
            ids = ", ".join(r.id for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise UsageError(f"run id {run_id!r} is ambiguous: {ids} (give more of it)")
        return rows[0]

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except VmlabError:
            raise
        except IntegrityError as exc:
            raise UsageError(f"{doing} {self.url}: {_first_line(exc)}", details=str(exc)) from exc
        except SQLAlchemyError as exc:
            raise _wrap(exc, f"{doing} {self.url}") from exc

    def _upgrade(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self._engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_ADVISORY_LOCK)))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise _wrap(exc, f"cannot open results store {self.url}") from exc
        except CommandError as exc:
            raise UsageError(
                f"cannot open results store {self.url}: its schema is unknown to this vmlab"
                f" ({_first_line(exc)}); a newer vmlab may have written it",
                details=str(exc),
            ) from exc


def resolve_url(url: str | Path | None) -> URL:
    """The SQLAlchemy URL for what a user typed: a URL, a path, or nothing."""
    if url is None:
        url = DEFAULT_URL
    if isinstance(url, Path) or "://" not in url:
        return URL.create("sqlite", database=str(Path(url).expanduser().absolute()))
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UsageError(
            f"{url!r} is not a database URL (try sqlite:///PATH or postgresql://HOST/DB)"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise UsageError(
                f"results store {url!r}: driver {driver!r} is not supported (use postgresql://...)"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise UsageError(
                f"results store {url!r}: driver {driver!r} is not supported (use sqlite:///PATH)"
            )
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            database = str(Path(database).expanduser().absolute())
        return parsed.set(drivername="sqlite", database=database)
    raise UsageError(
        f"results store {url!r}: unsupported database {backend!r}"
        " (use sqlite:///PATH or postgresql://HOST/DB)"
    )


def _create_engine(url: URL, display: str) -> Engine:
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            # one shared connection, or every thread would see its own empty database
            return sa.create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        directory = Path(database).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HostError(
                f"cannot open results store {display}: cannot create {directory}:"
                f" {exc.strerror or exc}"
            ) from exc
        engine = sa.create_engine(url, connect_args={"timeout": 30.0, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers (vmlab runs) beside a writing run
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


# --------------------------------------------------------------------------- mapping


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _result_row(result: TestResult) -> ResultRow:
    row = ResultRow(
        test_id=_text(result.test_id),
        suite=_text(result.suite),
        domain=_text(result.domain),
        level=result.level,
        safety=_text(result.safety),
        machine=_text(result.machine),
        memory_mib=result.vm.memory_mib,
        cpus=result.vm.cpus,
        kernel=_text(result.vm.kernel),
        started_at=result.start,
        duration_s=result.duration_s,
        outcome=result.outcome.value,
        message=_text(result.message),
        output_tail=_text(result.output_tail),
        attempt=result.attempt,
        extra={_text(k): _text(v) for k, v in result.extra.items()},
    )
    row.metrics = [MetricRow(name=_text(k), value=v) for k, v in result.metrics.items()]
    row.artifacts = [ArtifactRow(name=_text(k), path=_text(v)) for k, v in result.artifacts.items()]
    if result.crash is not None:
        crash = result.crash
        row.crash = CrashRow(
            title=_text(crash.title),
            kind=_text(crash.kind),
            signature=_text(crash.signature),
            report=_text(crash.report),
        )
    return row


def _test_result(row: ResultRow) -> TestResult:
    crash = row.crash
    return TestResult(
        test_id=row.test_id,
        suite=row.suite,
        domain=row.domain,
        level=row.level,
        safety=row.safety,
        machine=row.machine,
        vm=VmSpec(memory_mib=row.memory_mib, cpus=row.cpus, kernel=row.kernel),
        start=row.started_at,
        duration_s=row.duration_s,
        outcome=Outcome(row.outcome),
        message=row.message,
        output_tail=row.output_tail,
        artifacts={a.name: a.path for a in row.artifacts},
        metrics={m.name: m.value for m in row.metrics},
        crash=None
        if crash is None
        else CrashInfo(
            title=crash.title, kind=crash.kind, signature=crash.signature, report=crash.report
        ),
        attempt=row.attempt,
        extra=dict(row.extra),
    )


def _run_record(row: RunRow) -> RunRecord:
    return RunRecord(
        run_id=row.id,
        start=row.started_at,
        end=row.ended_at,
        status=RunStatus(row.status),
        host=row.host,
        accel=row.accel,
        qemu_version=row.qemu_version,
        kernel_release=row.kernel_release,
        kernel_config_hash=row.kernel_config_hash,
        lab_hash=row.lab_hash,
        git_commit=row.git_commit,
        command_line=tuple(row.command_line),
        environment=dict(row.environment),
        results=tuple(_test_result(r) for r in row.results),
    )


# --------------------------------------------------------------------------- errors

# (substring of the driver's message, lower case) -> (error class, what to tell the user)
_KNOWN_ERRORS: Final[Sequence[tuple[str, type[VmlabError], str]]] = (
    ("connection refused", HostError, "connection refused (is the server running?)"),
    ("is the server running locally", HostError, "no server socket (is the server running?)"),
    ("timeout expired", HostError, "connection timed out (is the host reachable?)"),
    (
        "password authentication failed",
        UsageError,
        "password authentication failed (check the user and password in the URL)",
    ),
    ("no password supplied", UsageError, "the server wants a password (put it in the URL)"),
    ("could not translate host name", UsageError, "unknown host name (check the URL)"),
    ("name or service not known", UsageError, "unknown host name (check the URL)"),
    (
        "unable to open database file",
        HostError,
        "cannot open the database file (check its directory's permissions)",
    ),
    ("file is not a database", UsageError, "the file is not an SQLite database"),
    ("readonly database", HostError, "the database file is read-only"),
    ("database is locked", HostError, "the database is locked by another process (try again)"),
)


def _wrap(exc: SQLAlchemyError, prefix: str) -> VmlabError:
    """A one-line error for a failure of the database (driver text in `details`)."""
    orig: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        orig = exc.orig
    text = str(orig).strip()
    lowered = text.lower()
    for needle, kind, message in _KNOWN_ERRORS:
        if needle in lowered:
            return kind(f"{prefix}: {message}", details=text)
    if "does not exist" in lowered:
        return UsageError(f"{prefix}: {_first_line(orig)}", details=text)
    return HostError(f"{prefix}: {_first_line(orig)}", details=text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    line = line.removeprefix("connection failed: ")
    if "FATAL:" in line:
        line = line.rpartition("FATAL:")[2].strip()
    return line if len(line) <= 200 else line[:197] + "..."
