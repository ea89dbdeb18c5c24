"""Alembic's entry point for the results store.

`Store.open` hands over a connection in `config.attributes["connection"]`; when
there is none (a developer running `alembic` by hand), `sqlalchemy.url` from the
config is used instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from vmlab.results.store import Base


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    given = config.attributes.get("connection")
    if isinstance(given, sa.Connection):
        _run(given)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url given to the migrations")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


main()
