"""Every ``edx-arena`` command line in the README's shell blocks (and docs/hyperspy.md, docs/submissions.md) names a
real command with real options: a renamed option or command breaks this test, not a reader."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]
_SEPARATORS = {"&&", "||", "|", "&", ";"}


def _command_lines(doc: Path) -> list[list[str]]:
    found = []
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
        for line in block.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
            # Drop redirections (`> scored.json`): the shell's, not the command's.
            tokens = [
                t for i, t in enumerate(tokens) if not (set(t) <= set("<>") or (i and set(tokens[i - 1]) <= set("<>")))
            ]
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token in _SEPARATORS:
                    if segment and segment[0] == "edx-arena":
                        found.append(segment[1:])
                    segment = []
                else:
                    segment.append(token)
    return found


LINES = [
    (doc.name, args)
    for doc in (ROOT / "README.md", ROOT / "docs" / "hyperspy.md", ROOT / "docs" / "submissions.md")
    for args in _command_lines(doc)
]


def test_the_walkthroughs_use_the_cli():
    commands = {args[0] for _, args in LINES}
    assert {
        "download",
        "solve",
        "score",
        "submit",
        "status",
        "leaderboard",
        "serve",
        "worker",
        "admin",
        "dataset",
        "init",
        "run",
    } <= commands


@pytest.mark.parametrize("doc,args", LINES, ids=[f"{d}: {' '.join(a)}" for d, a in LINES])
def test_each_documented_command_line_parses(doc, args):
    # click parses every option before it acts on --help: an unknown command or option fails here.
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, f"{doc}: `edx-arena {' '.join(args)}` → {r.output}"
