"""Every ``edx-arena`` command and sub-command answers ``--help`` with a description, examples
for the commands that do something, and the exit-code table where it applies."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from services.cli.exit_codes import EPILOG, ExitCode
from services.cli.helptext import reflow
from services.cli.main import app

runner = CliRunner()


def _is_group(command) -> bool:
    return hasattr(command, "commands")  # typer vendors its own click: duck-type the group


def _tree(command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = [(path, command)]
    if _is_group(command):
        for name, sub in sorted(command.commands.items()):
            found += _tree(sub, (*path, name))
    return found


COMMANDS = _tree(typer.main.get_command(app))
LEAVES = [(path, c) for path, c in COMMANDS if not _is_group(c)]


def _help(path: tuple[str, ...]) -> str:
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


def test_the_tree_has_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    for expected in (
        "submit",
        "status",
        "download",
        "leaderboard",
        "serve",
        "worker",
        "demo",
        "solve",
        "score",
        "run",
        "init",
        "baselines",
        "dataset build",
        "dataset import",
        "dataset export",
        "admin create-participant",
        "admin seed-tier",
        "admin rescore",
        "admin upload-dataset",
    ):
        assert expected in names


@pytest.mark.parametrize(
    "path,command", COMMANDS, ids=lambda v: " ".join(v) or "edx-arena" if isinstance(v, tuple) else ""
)
def test_help_exits_0_with_a_description(path, command):
    text = _help(path)
    assert "Usage:" in text
    description = (command.help or "").strip()
    assert len(description) > 20, f"{' '.join(path)!r} has no real description"
    # The first sentence of the description is on screen (reflowed, so compare word by word).
    first = description.split("\n\n")[0].split()[:6]
    assert " ".join(first) in " ".join(text.split()), text


@pytest.mark.parametrize("path,command", LEAVES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_shows_an_example(path, command):
    text = _help(path)
    assert "Example" in text, f"{' '.join(path)} --help has no example"
    # Each example is a real invocation of this very command.
    assert f"edx-arena {' '.join(path)}" in text


@pytest.mark.parametrize("path", [(), ("submit",), ("status",), ("download",), ("leaderboard",), ("run",)])
def test_exit_codes_are_listed(path):
    text = " ".join(_help(path).split())
    assert " ".join(EPILOG.split()) in text
    for code in ExitCode:
        assert f"{int(code)} " in EPILOG


def test_a_command_without_arguments_shows_help_not_an_error():
    r = runner.invoke(app, [])
    assert r.exit_code in (0, 2) and "Usage:" in r.output and "submit" in r.output


def test_reflow_joins_prose_and_keeps_examples():
    doc = """First line
    continues here.

    Second paragraph
    also joined.

        edx-arena submit a.h5
        edx-arena submit b.h5
    """
    assert reflow(doc) == (
        "First line continues here.\n\nSecond paragraph also joined.\n\n"
        "[cyan]    edx-arena submit a.h5[/cyan]\n[cyan]    edx-arena submit b.h5[/cyan]"
    )


def test_examples_keep_their_indentation_even_right_after_the_heading():
    """`plot error` has one prose paragraph, then "Example:", then the example: typer's dedent
    must not pull the example to the margin."""
    text = _help(("plot", "error"))
    assert "\n     edx-arena plot error " in text  # the help's own 1-space margin + 4
