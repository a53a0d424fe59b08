"""teams: users and tokens, label history, review columns, readings and agreement

Revision ID: 0006
Revises: 0001
Create Date: 2026-12-02 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("readings", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("review_status", sa.String(16), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("reviewed_by", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("review_level", sa.String(16), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("review_ts", sa.Float(), nullable=False, server_default="0"))
        batch_op.create_index("ix_labels_review", ["review_status"], unique=False)
    op.create_table(
        "label_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("ext", sa.String(32), nullable=False),
        sa.Column("file", sa.String(1024), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(255), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("served_ts", sa.Float(), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("image_id", "tag", "number", name="uq_label_versions_number"),
    )
    op.create_index("ix_label_versions_author", "label_versions", ["author", "tag"], unique=False)
    op.create_table(
        "agreements",
        sa.Column("image_id", sa.String(255), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("author_a", sa.String(255), nullable=False),
        sa.Column("author_b", sa.String(255), nullable=False),
        sa.Column("version_a", sa.Integer(), nullable=False),
        sa.Column("version_b", sa.Integer(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=False),
        sa.Column("surface_mm", sa.Float(), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", "label", "author_a", "author_b"),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("expires_ts", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user"], ["users.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user"], unique=False)
    op.create_index("ix_api_tokens_expires_ts", "api_tokens", ["expires_ts"], unique=False)


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("agreements")
    op.drop_index("ix_label_versions_author", table_name="label_versions")
    op.drop_table("label_versions")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index("ix_labels_review")
        for column in ("review_ts", "review_level", "reviewed_by", "review_status", "version"):
            batch_op.drop_column(column)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("readings")
