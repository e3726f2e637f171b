"""Durable timers remember the moment they stand for, so an older write cannot move them.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from apphub.store.types import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("durable_timers", sa.Column("as_of", UtcDateTime()))


def downgrade() -> None:
    op.drop_column("durable_timers", "as_of")
