"""api_keys.rolled_to: the key a roll replaced a key with

Revision ID: ada63b33b29f
Revises: 8a3cf22afdfb
Create Date: 2026-11-30 12:00:00.000000

Keys rolled before this revision get it from their ``key.rolled`` audit
events (the latest one, if a key was rolled more than once), so a key that
is in its grace period now is refused a second roll too.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ada63b33b29f"
down_revision: str | None = "8a3cf22afdfb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_events = sa.table(
    "events",
    sa.column("id", sa.String(30)),
    sa.column("type", sa.String(40)),
    sa.column("key_id", sa.String(30)),
    sa.column("data", sa.JSON()),
)
_api_keys = sa.table(
    "api_keys", sa.column("id", sa.String(30)), sa.column("rolled_to", sa.String(30))
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rolled_to", sa.String(length=30), nullable=True))

    connection = op.get_bind()
    rolled = connection.execute(
        sa.select(_events.c.key_id, _events.c.data)
        .where(_events.c.type == "key.rolled", _events.c.key_id.is_not(None))
        .order_by(_events.c.id)
    )
    latest: dict[str, str] = {}
    for key_id, data in rolled:
        if isinstance(data, dict) and isinstance(data.get("rolledTo"), str):
            latest[key_id] = data["rolledTo"]
    for key_id, rolled_to in latest.items():
        connection.execute(
            sa.update(_api_keys).where(_api_keys.c.id == key_id).values(rolled_to=rolled_to)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rolled_to")
