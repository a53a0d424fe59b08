"""model_checks: audit picks and pre-annotations scored against final labels; images by random key

Revision ID: 0007
Revises: 0001
Create Date: 2026-12-02 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_checks",
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("final_labels", sa.Integer(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=False),
        sa.Column("per_label", sa.JSON(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", "kind"),
    )
    op.create_index("ix_model_checks_kind", "model_checks", ["kind", "model", "model_version"], unique=False)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index("ix_images_rand", ["completed", "rand_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_rand")
    op.drop_index("ix_model_checks_kind", table_name="model_checks")
    op.drop_table("model_checks")
