"""model inspection state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:02:41.118205
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Models uploaded before this revision start 'pending' with no enqueue time: the reaper sends them.
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inspection_status', sa.String(length=16), server_default='pending',
                                      nullable=False))
        batch_op.add_column(sa.Column('inspection_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('inspection_enqueued_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('inspection_enqueued_at')
        batch_op.drop_column('inspection_error')
        batch_op.drop_column('inspection_status')
