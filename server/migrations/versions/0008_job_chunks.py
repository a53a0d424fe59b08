"""job chunks: a sharded job's chunks name their parent, their place and their try

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-02 06:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(36), nullable=True))
        batch_op.add_column(sa.Column("chunk", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
        batch_op.create_index("ix_jobs_chunk", ["parent_id", "chunk", "attempt"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_chunk")
        batch_op.drop_column("attempt")
        batch_op.drop_column("chunk")
        batch_op.drop_column("parent_id")
