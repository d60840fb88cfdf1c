"""job teacher model

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 13:10:55.574996
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('teacher_model_id', sa.String(length=40), nullable=True))
        batch_op.create_foreign_key('fk_jobs_teacher_model_id_models', 'models', ['teacher_model_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_teacher_model_id_models', type_='foreignkey')
        batch_op.drop_column('teacher_model_id')

