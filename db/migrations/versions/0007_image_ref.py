"""submissions.image_ref: the image in the server's registry, pinned by manifest digest

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00

With EDX_IMAGE_REGISTRY set, every accepted Hidden image is pushed to the server's registry and
compute hosts pull it by this reference (issue 19). Existing rows stay NULL: the server pushes
them when a compute host first claims their run.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.add_column(sa.Column('image_ref', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.drop_column('image_ref')
