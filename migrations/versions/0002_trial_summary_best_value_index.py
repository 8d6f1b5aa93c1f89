"""Covering index for the best value of every trial of a metric (trial_summary: metric, trial_id, best_value).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f('ix_trial_summary_metric_trial_id'),
        'trial_summary',
        ['metric', 'trial_id'],
        unique=False,
        postgresql_include=['best_value'],
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_trial_summary_metric_trial_id'), table_name='trial_summary')
