"""`flask db ...`: Flask-Migrate's commands, with Flask-Migrate loaded only when one runs.

Flask-Migrate imports Alembic, which is a quarter of a second of every worker's boot and
several megabytes of its memory, for commands only the CLI runs.
"""

from __future__ import annotations

import click
from flask.cli import ScriptInfo

COMMAND = "db"


class MigrationCommands(click.Group):
    """Stands in for Flask-Migrate's `db` group: when invoked, sets Flask-Migrate up on the
    CLI's app and hands the command line over to that group (its options included)."""

    def __init__(self):
        super().__init__(COMMAND, help="Database migrations (Flask-Migrate).")

    def _commands(self, ctx: click.Context) -> click.Group:
        from flask_migrate import Migrate
        from flask_migrate.cli import db as commands

        from app.extensions import db

        app = ctx.ensure_object(ScriptInfo).load_app()
        if "migrate" not in app.extensions:
            Migrate(app, db, render_as_batch=True)  # batch mode: SQLite cannot ALTER much
        return commands

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        return self._commands(parent).make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        return ctx.command.invoke(ctx)  # the context is Flask-Migrate's group's

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._commands(ctx).list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._commands(ctx).get_command(ctx, name)


def init_app(app) -> None:
    app.cli.add_command(MigrationCommands())
