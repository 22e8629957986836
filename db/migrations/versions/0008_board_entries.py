"""board_entries and board_rules: each method's entry on each tier, kept as submissions change

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 07:00:00

Derived data (``db.board_entries``): choosing entries from every scored submission at each
board read grew with the number of submissions (issue 20). The tables start empty and without
a rule row, so the first board read after this migration builds them from the submissions.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'board_entries',
        sa.Column('view', sa.String(length=20), nullable=False),
        sa.Column('tier', sa.String(length=20), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=False),
        sa.Column('method_key', sa.String(length=200), nullable=False),
        sa.Column('baseline', sa.Boolean(), nullable=False),
        sa.Column('submission_id', sa.String(length=36), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('image_digest', sa.String(length=100), nullable=True),
        sa.Column('trust', sa.String(length=20), nullable=True),
        sa.Column('parent_id', sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id']),
        sa.ForeignKeyConstraint(['submission_id'], ['submissions.id']),
        sa.PrimaryKeyConstraint('view', 'tier', 'participant_id', 'method_key', 'baseline'),
    )
    op.create_index('ix_board_entries_board', 'board_entries', ['view', 'tier', 'score'], unique=False)
    op.create_index('ix_board_entries_submission_id', 'board_entries', ['submission_id'], unique=False)
    op.create_table(
        'board_rules',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('scoring_version', sa.String(length=40), nullable=False),
        sa.Column('policy', sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('board_rules')
    op.drop_index('ix_board_entries_submission_id', table_name='board_entries')
    op.drop_index('ix_board_entries_board', table_name='board_entries')
    op.drop_table('board_entries')
