"""usage row versions, fallback counts and flush marks (exact usage counts, issue 12 B)

Revision ID: 5c1e0b7d9a41
Revises: e007ad35878e
Create Date: 2026-11-27 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyhouse.db.base

revision: str = "5c1e0b7d9a41"
down_revision: str | None = "e007ad35878e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_flushes",
        sa.Column("instance", sa.String(length=40), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.Column("flushed_at", keyhouse.db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_usage_flushes")),
    )
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("fallback", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_column("fallback")
        batch_op.drop_column("version")
    op.drop_table("usage_flushes")
