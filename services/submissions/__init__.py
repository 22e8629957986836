"""The life of a submission, one module per step (docs/architecture.md)::

    upload ─▶ intake ─▶ (dispatch) ─▶ run ─▶ scoring ─▶ scored rows ─▶ leaderboard
                 │                     │        │
                 └──── state: the status table, claim, leases, the retry policy ────┘

- :mod:`~services.submissions.intake`: every way in, in one order (cheap checks → store →
  validate → insert), and :func:`~services.submissions.intake.accept` (commit → send);
- :mod:`~services.submissions.quota` and :mod:`~services.submissions.storage`: the daily quota
  and the participant's lock; where uploads go;
- :mod:`~services.submissions.ownership`: whose an image is (only its owner and organizers may
  submit it by name), and which earlier entry of another participant a submission duplicates;
- :mod:`~services.submissions.state`: the state machine, claim, leases, reaper, rescore, the
  retry policy (imports only :mod:`db`);
- :mod:`~services.submissions.run`: the sandboxed run of an image, link or script;
- :mod:`~services.submissions.scoring`: scoring a stored result into score rows;
- :mod:`~services.submissions.recovery`: requeueing what a dead worker or API left behind;
- :mod:`~services.submissions.remote` and :mod:`~services.submissions.compute`: a run on a
  compute host (issue 19), the server's half (claim, input, upload, hand-off) and the host's
  (claim over HTTP, the image by digest, the same sandbox).

Nothing is re-exported here: import the module that does the step.
"""
