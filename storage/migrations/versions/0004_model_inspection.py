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
    # Models uploaded before this revision were never inspected; they stay 'pending' (submit accepts them).
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inspection_status', sa.String(length=16), server_default='pending',
                                      nullable=False))
        batch_op.add_column(sa.Column('inspection_error', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('inspection_error')
        batch_op.drop_column('inspection_status')
