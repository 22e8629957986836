"""Method entries and runs on every tier: submissions.method_key and submissions.parent_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 03:00:00

A board entry is a (participant, method) pair, the method name in its normal form
(``harness.methods.method_key``: trimmed, case-folded, inner whitespace collapsed; empty
becomes "unnamed"); existing rows get their key from their name. ``parent_id`` ties the runs
of a Hidden-tier artifact on the other blind tiers to the Hidden submission; existing
submissions have none (they were run on Hidden only).
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


#: Frozen copies of ``harness.methods`` as of this revision: a later change there must not
#: change what this migration did.
UNNAMED = 'unnamed'


def method_key(name):
    return ' '.join((name or '').split()).casefold() or UNNAMED


def upgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('method_key', sa.String(length=200), nullable=False, server_default=UNNAMED))
        batch_op.add_column(sa.Column('parent_id', sa.String(length=36), nullable=True))
        batch_op.create_index('ix_submissions_method_key', ['method_key'], unique=False)
        batch_op.create_index('ix_submissions_parent_id', ['parent_id'], unique=False)
        batch_op.create_foreign_key('fk_submissions_parent_id', 'submissions', ['parent_id'], ['id'])
    submissions = sa.table(
        'submissions', sa.column('id', sa.String), sa.column('method', sa.String), sa.column('method_key', sa.String)
    )
    connection = op.get_bind()
    names = connection.execute(sa.select(submissions.c.method).distinct()).scalars().all()
    for name in names:
        key = method_key(name)
        if key != UNNAMED:
            connection.execute(sa.update(submissions).where(submissions.c.method == name).values(method_key=key))


def downgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_submissions_parent_id', type_='foreignkey')
        batch_op.drop_index('ix_submissions_parent_id')
        batch_op.drop_index('ix_submissions_method_key')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('method_key')
