"""clicks: an interactive model's clicks per study, linked to the label they led to

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 14:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clicks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(255), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(255), nullable=True),
        sa.Column("label_name", sa.String(128), nullable=True),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("label_tag", sa.String(64), nullable=True),
        sa.Column("label_version", sa.Integer(), nullable=True),
    )
    op.create_index("ix_clicks_image", "clicks", ["image_id", "label_version"])


def downgrade() -> None:
    op.drop_index("ix_clicks_image", table_name="clicks")
    op.drop_table("clicks")
