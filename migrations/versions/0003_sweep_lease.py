"""Driver lease per sweep (sweep_lease: holder, host, pid, acquired_at, heartbeat_at): one driver runs a sweep.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sweep_lease',
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('holder', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweep.id'], name=op.f('fk_sweep_lease_sweep_id_sweep'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sweep_id', name=op.f('pk_sweep_lease'))
    )


def downgrade() -> None:
    op.drop_table('sweep_lease')
