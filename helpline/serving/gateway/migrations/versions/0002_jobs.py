"""Console jobs as database records (``store_jobs``), so that every replica sees them and a restart keeps them.

Jobs recorded on disk by earlier releases (``logs/jobs/*/job.json``) are not imported: their logs stay in the
workspace, and they are no longer listed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _empty(default: str = "") -> sa.TextClause:
    return sa.text(f"'{default}'")


def upgrade() -> None:
    if "jobs" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database that had it before it was stamped (adopted by 0001 with it): nothing to add
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("args", sa.Text, nullable=False, server_default=_empty("[]")),
        sa.Column("actor", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("ended_at", sa.Double),
        sa.Column("exit_code", sa.Integer),
        sa.Column("host", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_start", sa.Text),
        sa.Column("cancel_requested", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("log_tail", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("log_path", sa.Text),
        sa.Column("reason", sa.Text, nullable=False, server_default=_empty()),
    )
    op.create_index("jobs_state", "jobs", ["state", "created_at"])


def downgrade() -> None:
    op.drop_index("jobs_state", table_name="jobs")
    op.drop_table("jobs")
