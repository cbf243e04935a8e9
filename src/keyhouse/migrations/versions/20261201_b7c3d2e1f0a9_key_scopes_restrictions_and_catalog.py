"""key scopes and restrictions, the scope catalog, the browser guard setting (issue 15)

Revision ID: b7c3d2e1f0a9
Revises: 5c1e0b7d9a41
Create Date: 2026-12-01 12:00:00.000000

Existing keys get NULL scopes and restrictions: unrestricted, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7c3d2e1f0a9"
down_revision: str | None = "5c1e0b7d9a41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_entries",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_catalog_entries")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("restrictions", sa.JSON(), nullable=True))
    # Not batch mode for accounts: on SQLite its copy-and-move (which Alembic
    # picks for a column whose server default is an expression such as
    # sa.false()) drops the table, and with foreign_keys=ON that DROP cascades
    # to every environment, key and event of every account (it did, in
    # tests/db/test_migration_restrictions.py). A plain ADD COLUMN works on both.
    op.add_column(
        "accounts",
        sa.Column(
            "refuse_secret_keys_from_browsers",
            sa.Boolean(),
            server_default=sa.false(),
            nullable=False,
        ),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Not batch mode's copy of accounts (see upgrade): SQLite >= 3.35
        # drops a column in place.
        op.execute("ALTER TABLE accounts DROP COLUMN refuse_secret_keys_from_browsers")
    else:
        op.drop_column("accounts", "refuse_secret_keys_from_browsers")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("restrictions")
        batch_op.drop_column("scopes")
    op.drop_table("catalog_entries")
