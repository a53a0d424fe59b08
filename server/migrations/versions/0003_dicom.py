"""dicom: instances, series and SEG exports

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 08:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_series",
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("study_date", sa.String(length=16), nullable=False),
        sa.Column("study_time", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("n_instances", sa.Integer(), nullable=False),
        sa.Column("remote_instances", sa.Integer(), nullable=False),
        sa.Column("last_instance_ts", sa.Float(), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("referenced_series_uid", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("series_uid"),
    )
    with op.batch_alter_table("dicom_series", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_series_study_uid", ["study_uid"], unique=False)
        batch_op.create_index("ix_dicom_series_state", ["state", "last_instance_ts"], unique=False)
        batch_op.create_index(
            "ix_dicom_series_fetch", ["source", "state", "priority", "created_ts"], unique=False
        )
        batch_op.create_index(
            "ix_dicom_series_referenced_series_uid", ["referenced_series_uid"], unique=False
        )

    op.create_table(
        "dicom_instances",
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("file", sa.String(length=512), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("received_ts", sa.Float(), nullable=False),
        sa.Column("calling_aet", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["series_uid"], ["dicom_series.series_uid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sop_uid"),
    )
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_instances_series_uid", ["series_uid"], unique=False)

    op.create_table(
        "dicom_exports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("image_id", sa.String(length=255), nullable=False),
        sa.Column("label_ts", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("destinations", sa.String(length=1024), nullable=False),
        sa.Column("seg_series_uid", sa.String(length=64), nullable=True),
        sa.Column("seg_sop_uid", sa.String(length=64), nullable=True),
        sa.Column("file", sa.String(length=512), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("dicom_exports", schema=None) as batch_op:
        batch_op.create_index("ix_dicom_exports_image_id", ["image_id"], unique=False)
        batch_op.create_index("ix_dicom_exports_status", ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("dicom_exports")
    op.drop_table("dicom_instances")
    op.drop_table("dicom_series")
