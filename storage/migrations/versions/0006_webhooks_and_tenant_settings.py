"""webhooks and tenant settings

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 09:14:27.301554
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_settings',
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('webhook_secret', sa.String(length=128), nullable=False),
    sa.Column('callback_url', sa.Text(), nullable=True),
    sa.Column('artifact_retention_days', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant')
    )
    # Jobs finished before this revision have no callback: nothing to deliver for them.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('callback_url', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('callback_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('callback_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('callback_log', sa.JSON(), nullable=True))
        batch_op.create_index('ix_jobs_callback_status_due', ['callback_status', 'callback_due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_callback_status_due')
        batch_op.drop_column('callback_log')
        batch_op.drop_column('callback_due_at')
        batch_op.drop_column('callback_status')
        batch_op.drop_column('callback_url')

    op.drop_table('tenant_settings')
