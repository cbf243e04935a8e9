"""events.account_id nullable: operator events of keyhouse as a whole (issue 15)

Revision ID: c0d73b1fcc8d
Revises: b7c3d2e1f0a9
Create Date: 2026-12-01 14:00:00.000000

PUT /admin/scopes changes the platform's scope catalog, which belongs to no
account; its scopes.updated event has no account (GET /admin/events shows
it, no account's GET /events does). On SQLite batch mode copies events:
nothing references events, so the copy's DROP TABLE cascades nowhere.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0d73b1fcc8d"
down_revision: str | None = "b7c3d2e1f0a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("account_id", existing_type=sa.String(length=30), nullable=True)


def downgrade() -> None:
    # Operator events cannot be kept without an account.
    op.execute("DELETE FROM events WHERE account_id IS NULL")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("account_id", existing_type=sa.String(length=30), nullable=False)
