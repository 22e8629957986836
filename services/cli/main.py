"""The ``edx-arena`` command: one typer app; each module registers its own commands."""

from __future__ import annotations

import typer

from services.cli import client, demo, local, plots, science, server
from services.cli.exit_codes import EPILOG
from services.cli.helptext import reflow_help

app = typer.Typer(
    name="edx-arena",
    help="EDX Arena: build tier datasets, solve and score them, run the server, submit results.\n\n"
    "Every command has --help with examples; `edx-arena COMMAND --help`.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
science.register(app)
server.register(app)
client.register(app)
local.register(app)
demo.register(app)
plots.register(app)
reflow_help(app)  # after every register(): docstrings become --help text

if __name__ == "__main__":  # pragma: no cover
    app()
