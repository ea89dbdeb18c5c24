"""Alembic migrations of the results store (run by `Store.open`, no alembic.ini).

To add a revision, from the repository root::

    .venv/bin/python -c 'from alembic import command; from alembic.config import Config
    c = Config(); c.set_main_option("script_location", "src/vmlab/results/migrations")
    c.set_main_option("sqlalchemy.url", "sqlite:///.vmlab/results.db")
    command.revision(c, message="what changes", autogenerate=True)'

then check the generated file by hand: migrations are written for both SQLite and
PostgreSQL (SQLite ALTERs go through batch mode, which env.py turns on).
"""
