"""datasets.truth_in_view: whether the participants' view of a dataset carries the truth

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:00:00

The Standard track leaves it to the organizer (``with_truth``); it used to be decided when the
view was written and never stored, so the pictures reopened the HDF5 file to find out. Existing
rows are filled in by the tier rules (Public yes; Dev and Hidden no) and, on the Standard
track, by looking at the stored view once.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _view_has_truth(path: str) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            scenes = f["scenes"]
            return len(scenes) > 0 and all("x_true" in scenes[s] for s in scenes)
    except (OSError, KeyError):  # a view that is gone or unreadable shows no truth
        return False


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('truth_in_view', sa.Boolean(), nullable=False, server_default=sa.false()))
    datasets = sa.table(
        'datasets', sa.column('id', sa.Integer), sa.column('tier', sa.String), sa.column('view_path', sa.Text),
        sa.column('truth_in_view', sa.Boolean),
    )
    connection = op.get_bind()
    connection.execute(sa.update(datasets).where(datasets.c.tier == 'public').values(truth_in_view=True))
    for row in connection.execute(sa.select(datasets.c.id, datasets.c.view_path).where(datasets.c.tier == 'standard')):
        if _view_has_truth(row.view_path):
            connection.execute(sa.update(datasets).where(datasets.c.id == row.id).values(truth_in_view=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('truth_in_view')
