"""Initial schema: sweeps, trials, metric series, trial summaries, events, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every trial query is scoped to one sweep, so each filterable column is indexed behind sweep_id.
TRIAL_INDEXED_COLUMNS = (
    'status',
    'budget',
    'n_hidden',
    'd_m',
    'd_mlp',
    'l_mlp',
    'd_tree',
    'd_branch',
    'rho_rec',
    'k_e',
    'k_c',
    'params_total',
    'seed',
)


def upgrade() -> None:
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('name', name=op.f('uq_api_token_name')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_api_token_token_sha256'))
    )
    op.create_table('sweep',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('task', sa.String(length=100), nullable=False),
    sa.Column('metric', sa.String(length=100), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('metric_modes', sa.JSON(), nullable=False),
    sa.Column('spec_text', sa.Text(), nullable=False),
    sa.Column('spec_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('code_version', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweep')),
    sa.UniqueConstraint('name', name=op.f('uq_sweep_name'))
    )
    op.create_table('event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('sweep_id', sa.Integer(), nullable=True),
    sa.Column('trial_id', sa.String(length=32).with_variant(sa.String(length=32, collation='C'), 'postgresql'),
              nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweep.id'], name=op.f('fk_event_sweep_id_sweep'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event'))
    )
    op.create_index(op.f('ix_event_sweep_id_id'), 'event', ['sweep_id', 'id'], unique=False)
    op.create_table('trial',
    sa.Column('id', sa.String(length=32).with_variant(sa.String(length=32, collation='C'), 'postgresql'),
              nullable=False),
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('budget', sa.BigInteger(), nullable=True),
    sa.Column('n_hidden', sa.Integer(), nullable=False),
    sa.Column('d_m', sa.Integer(), nullable=False),
    sa.Column('d_mlp', sa.Integer(), nullable=False),
    sa.Column('l_mlp', sa.Integer(), nullable=False),
    sa.Column('d_tree', sa.Integer(), nullable=False),
    sa.Column('d_branch', sa.Integer(), nullable=False),
    sa.Column('rho_rec', sa.Double(), nullable=False),
    sa.Column('k_e', sa.Integer(), nullable=False),
    sa.Column('k_c', sa.Integer(), nullable=False),
    sa.Column('params_total', sa.BigInteger(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('node', sa.String(length=200), nullable=True),
    sa.Column('device', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweep.id'], name=op.f('fk_trial_sweep_id_sweep'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trial'))
    )
    for column in TRIAL_INDEXED_COLUMNS:
        op.create_index(op.f(f'ix_trial_sweep_id_{column}'), 'trial', ['sweep_id', column], unique=False)
    op.create_table('metric_series',
    sa.Column('trial_id', sa.String(length=32).with_variant(sa.String(length=32, collation='C'), 'postgresql'),
              nullable=False),
    sa.Column('metric', sa.String(length=100).with_variant(sa.String(length=100, collation='C'), 'postgresql'),
              nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.Column('wall_time', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('trial_id', 'metric', 'step', name=op.f('pk_metric_series'))
    )
    op.create_table('trial_summary',
    sa.Column('trial_id', sa.String(length=32).with_variant(sa.String(length=32, collation='C'), 'postgresql'),
              nullable=False),
    sa.Column('metric', sa.String(length=100).with_variant(sa.String(length=100, collation='C'), 'postgresql'),
              nullable=False),
    sa.Column('last_step', sa.Integer(), nullable=True),
    sa.Column('last_value', sa.Double(), nullable=True),
    sa.Column('last_wall_time', sa.Double(), nullable=True),
    sa.Column('min_value', sa.Double(), nullable=True),
    sa.Column('max_value', sa.Double(), nullable=True),
    sa.Column('best_value', sa.Double(), nullable=True),
    sa.Column('best_step', sa.Integer(), nullable=True),
    sa.Column('final_value', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['trial_id'], ['trial.id'], name=op.f('fk_trial_summary_trial_id_trial'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trial_id', 'metric', name=op.f('pk_trial_summary'))
    )


def downgrade() -> None:
    op.drop_table('trial_summary')
    op.drop_table('metric_series')
    for column in TRIAL_INDEXED_COLUMNS:
        op.drop_index(op.f(f'ix_trial_sweep_id_{column}'), table_name='trial')
    op.drop_table('trial')
    op.drop_index(op.f('ix_event_sweep_id_id'), table_name='event')
    op.drop_table('event')
    op.drop_table('sweep')
    op.drop_table('api_token')
