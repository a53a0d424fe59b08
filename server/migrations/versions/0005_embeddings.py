"""embeddings: per-image feature vectors keyed by model version, for diversity-based selection

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-25 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embeddings",
        sa.Column("image_id", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", "model_version"),
    )
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.create_index("ix_embeddings_ts", ["ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.drop_index("ix_embeddings_ts")
    op.drop_table("embeddings")
