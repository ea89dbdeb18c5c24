"""The first schema: runs, test results, metrics, artifacts and crashes.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("accel", sa.String(16), nullable=False),
        sa.Column("qemu_version", sa.String(255), nullable=False),
        sa.Column("kernel_release", sa.String(255), nullable=False),
        sa.Column("kernel_config_hash", sa.String(128), nullable=False),
        sa.Column("lab_hash", sa.String(128), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("command_line", sa.JSON(), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
    )
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    op.create_table(
        "test_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(64),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("test_id", sa.String(1024), nullable=False),
        sa.Column("suite", sa.String(255), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("safety", sa.String(32), nullable=False),
        sa.Column("machine", sa.String(255), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("kernel", sa.String(1024), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("output_tail", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
    )
    op.create_index("ix_test_results_run_id", "test_results", ["run_id"])
    op.create_index("ix_test_results_test_id_outcome", "test_results", ["test_id", "outcome"])

    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "result_id",
            sa.Integer(),
            sa.ForeignKey("test_results.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.UniqueConstraint("result_id", "name"),
    )
    op.create_index("ix_metrics_result_id", "metrics", ["result_id"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "result_id",
            sa.Integer(),
            sa.ForeignKey("test_results.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.UniqueConstraint("result_id", "name"),
    )
    op.create_index("ix_artifacts_result_id", "artifacts", ["result_id"])

    op.create_table(
        "crashes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "result_id",
            sa.Integer(),
            sa.ForeignKey("test_results.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(255), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
    )
    op.create_index("ix_crashes_signature", "crashes", ["signature"])


def downgrade() -> None:
    op.drop_table("crashes")
    op.drop_table("artifacts")
    op.drop_table("metrics")
    op.drop_table("test_results")
    op.drop_table("runs")
