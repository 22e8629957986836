"""``--help`` text from the command docstrings, reflowed for typer's rich help screen.

Typer's rich help keeps every line break of a docstring paragraph, so a docstring wrapped at
the source's line length comes out ragged in a terminal of another width. :func:`reflow_help`
joins the lines of each prose paragraph and keeps indented blocks (the examples) line by line.
"""

from __future__ import annotations

import inspect

import typer
from rich.markup import escape

__all__ = ["reflow", "reflow_help"]

_EXAMPLE_STYLE = "cyan"


def reflow(doc: str) -> str:
    """Join the lines of each prose paragraph; indented paragraphs (examples) stay as written.

    Example lines are wrapped in a rich style tag, which also keeps their indentation: typer
    dedents the text after the first paragraph, so when only examples follow the heading
    ("Examples:") their common indentation would otherwise be stripped.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        "\n".join(f"[{_EXAMPLE_STYLE}]{escape(line)}[/{_EXAMPLE_STYLE}]" for line in p.splitlines())
        if p.startswith(" ")
        else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def reflow_help(app: typer.Typer) -> None:
    """Set every command's help (in ``app`` and its sub-apps) to its reflowed docstring."""
    for info in app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow(info.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
