"""submission trust/baseline marks and score intervals

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 09:40:00

One migration for two features so that parallel work does not fork the revision chain:
- ``submissions.baseline`` (organizer marks a reference baseline: shown, not competing) and
  ``submissions.trust`` (``None`` = automatic Certified rule, ``granted`` / ``revoked`` by an
  organizer), ``submissions.script_path`` for Python script submissions;
- ``scores.ci_low`` / ``scores.ci_high`` (95 % bootstrap interval) and ``scores.tile_stats``
  (per-tile sufficient statistics, so paired comparisons need no rescoring).
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('baseline', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('trust', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('script_path', sa.Text(), nullable=True))
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ci_low', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('ci_high', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('tile_stats', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.drop_column('tile_stats')
        batch_op.drop_column('ci_high')
        batch_op.drop_column('ci_low')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('script_path')
        batch_op.drop_column('trust')
        batch_op.drop_column('baseline')
