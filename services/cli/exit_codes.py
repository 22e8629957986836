"""The exit codes of every ``edx-arena`` command, defined once so scripts can rely on them.

A script can tell "try again later" (5, 6, 7) from "fix your file" (3) from "your method
failed on the server" (4) from "fix your token or id" (8, 9) without reading the messages.
Every non-zero exit prints one line on stderr that says what went wrong; never a traceback.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["EPILOG", "ExitCode"]


class ExitCode(IntEnum):
    #: The command did what it was asked (``submit --wait``: the submission is scored; ``run``:
    #: the local run succeeded).
    OK = 0
    #: Any other failure, including a request the server refused for a reason not listed
    #: below (quota used up, wrong tier, duplicate name, ...); the server's message is printed.
    FAILURE = 1
    #: Bad command line (unknown option, missing argument, bad value): typer's own code.
    USAGE = 2
    #: An input file is invalid: a local file, or an upload the server refused as invalid
    #: (the message names the part of the file and the rule).
    INVALID_FILE = 3
    #: ``submit --wait``: the submission finished as ``failed`` (its outcome is printed); ``run``:
    #: the local run ended in any outcome but ``succeeded`` or ``platform_error``.
    SUBMISSION_FAILED = 4
    #: ``submit --wait``: no final state within ``--timeout``; the submission is still queued
    #: or running on the server, ``edx-arena status ID`` shows it later.
    TIMEOUT = 5
    #: The server could not be reached (connection refused, DNS, network timeout).
    UNREACHABLE = 6
    #: The server answered with a 5xx or something that is not the API's JSON.
    SERVER_ERROR = 7
    #: Not authorised: the token is missing or wrong (401), or it may not do this (403), e.g.
    #: another participant's submission or the Hidden tier's measurements.
    AUTH = 8
    #: The submission, tier, dataset or image asked for does not exist, or is not yours (404).
    NOT_FOUND = 9


#: The table shown under ``edx-arena --help`` and the participant commands' ``--help``.
EPILOG = (
    "Exit codes: 0 ok · 1 other failure · 2 usage error · 3 invalid input file · "
    "4 submission or run failed · 5 timed out waiting · 6 server unreachable · 7 server error · "
    "8 not authorised (token missing, wrong or not allowed) · 9 not found."
)
