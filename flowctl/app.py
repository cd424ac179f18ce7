"""The root Typer app: wires the subcommand modules, nothing else.

Command modules import only typer and light modules at import time; the server
stack (quart-trio, hypercorn, httpx) is imported inside the commands that need it,
so `flowctl --help` and `flowctl pack` start fast.
"""

from __future__ import annotations

import typer

from flowctl import __version__, fastparams

fastparams.install()  # plain parameters without pydantic: ~0.3 s less start-up per command


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowctl {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="flowctl",
    help="Run a fleet of AI inference nodes: pack and publish bundles, join nodes, serve models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich help pulls in rich.markdown and markdown_it (~70 ms of start-up).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """flowctl: bundles, hub, cluster and an OpenAI-compatible gateway, on Trio."""


def _register() -> None:
    # One line per command module; each module attaches its commands to `app`.
    from flowctl.commands import (
        bundle,
        cluster,
        gateway,
        hub,
        jobs,
        join,
        keys,
        migrate,
        node,
        node_tokens,
        publish,
        run,
        serve,
        up,
        users,
    )

    bundle.register(app)
    keys.register(app)
    gateway.register(app)
    node.register(app)
    publish.register(app)
    hub.register(app)
    serve.register(app)
    cluster.register(app)
    node_tokens.register(app)
    join.register(app)
    up.register(app)
    run.register(app)
    jobs.register(app)
    users.register(app)
    migrate.register(app)


_register()
