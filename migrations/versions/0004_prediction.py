"""Recorded predictions (prediction: the optimum a law predicted at a budget, its data snapshot, and its score).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREDICTED_VALUES = ('d_m', 'n_hidden', 'k_e')


def upgrade() -> None:
    op.create_table('prediction',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('metric', sa.String(length=100), nullable=False),
    sa.Column('budget', sa.BigInteger(), nullable=False),
    sa.Column('law', sa.String(length=32), nullable=False),
    sa.Column('n_bootstrap', sa.Integer(), nullable=False),
    *(sa.Column(f'{name}{end}', sa.Double(), nullable=False)
      for name in PREDICTED_VALUES for end in ('', '_low', '_high')),
    sa.Column('metric_value', sa.Double(), nullable=False),
    sa.Column('metric_low', sa.Double(), nullable=False),
    sa.Column('metric_high', sa.Double(), nullable=False),
    sa.Column('snapshot_hash', sa.String(length=64), nullable=False),
    sa.Column('snapshot_trials', sa.Integer(), nullable=False),
    sa.Column('snapshot_budgets', sa.JSON(), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('observed_hash', sa.String(length=64), nullable=True),
    sa.Column('observed', sa.JSON(), nullable=True),
    sa.Column('d_m_inside', sa.Boolean(), nullable=True),
    sa.Column('metric_inside', sa.Boolean(), nullable=True),
    sa.Column('metric_error', sa.Double(), nullable=True),
    sa.Column('regret', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweep.id'], name=op.f('fk_prediction_sweep_id_sweep'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction')),
    sa.UniqueConstraint('sweep_id', 'metric', 'budget', 'law', 'n_bootstrap', 'snapshot_hash',
                        name=op.f('uq_prediction_sweep_id_metric_budget_law_n_bootstrap_snapshot_hash'))
    )


def downgrade() -> None:
    op.drop_table('prediction')
