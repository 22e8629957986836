"""image_owners: which participant an image belongs to; submissions.duplicate_of (issue 16.2)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:00:00

A participant may submit only the images they brought (an archive they uploaded, a link they
pulled) or an organizer handed them; organizers any. Existing submissions fill the table, first
arrival kept: an archive (``edx-arena-sub/…``) or a pinned link (``…@sha256:…``) is its
submitter's, a script's base image is recorded as ``script``, and a bare local name submitted by
an organizer is the organizer's. A bare local name a participant submitted gives them nothing:
that is the very path the table closes.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _how(participant_id: int, kind: str, image: str | None, role: str) -> str | None:
    if kind == 'script':
        return 'script'
    if kind != 'container':
        return None
    if (image or '').startswith(f'edx-arena-sub/{participant_id}/'):  # the name their own upload got
        return 'archive'
    if '@sha256:' in (image or ''):
        return 'link'
    return 'organizer' if role == 'organizer' else None


def upgrade() -> None:
    op.create_table('image_owners',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.String(length=100), nullable=False),
    sa.Column('how', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('participant_id', 'image_id', name='uq_image_owner')
    )
    with op.batch_alter_table('image_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_owners_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_owners_participant_id'), ['participant_id'], unique=False)
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('duplicate_of', sa.String(length=36), nullable=True))

    submissions = sa.table(
        'submissions', sa.column('participant_id', sa.Integer), sa.column('kind', sa.String),
        sa.column('image', sa.String), sa.column('image_digest', sa.String), sa.column('created_at', sa.DateTime),
    )
    participants = sa.table('participants', sa.column('id', sa.Integer), sa.column('role', sa.String))
    owners = sa.table(
        'image_owners', sa.column('participant_id', sa.Integer), sa.column('image_id', sa.String),
        sa.column('how', sa.String), sa.column('created_at', sa.DateTime),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(submissions.c.participant_id, submissions.c.kind, submissions.c.image, submissions.c.image_digest,
                  submissions.c.created_at, participants.c.role)
        .join(participants, participants.c.id == submissions.c.participant_id)
        .where(submissions.c.image_digest.is_not(None))
        .order_by(submissions.c.created_at)
    )
    seen = set()
    for row in rows:
        how = _how(row.participant_id, row.kind, row.image, row.role)
        if how is None or (row.participant_id, row.image_digest) in seen:
            continue
        seen.add((row.participant_id, row.image_digest))
        connection.execute(sa.insert(owners).values(
            participant_id=row.participant_id, image_id=row.image_digest, how=how, created_at=row.created_at,
        ))


def downgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_column('duplicate_of')
    with op.batch_alter_table('image_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_owners_participant_id'))
        batch_op.drop_index(batch_op.f('ix_image_owners_image_id'))
    op.drop_table('image_owners')
