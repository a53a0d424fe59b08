"""scores: an index for the latest version scored by a method

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-02 06:20:00.000000
"""

from alembic import op

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scores_latest", "scores", ["method", "ts"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scores_latest", table_name="scores")
