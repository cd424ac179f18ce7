"""`flowctl keys gen`: Ed25519 key pairs for signing bundles."""

from __future__ import annotations

from pathlib import Path

import typer

keys_app = typer.Typer(name="keys", help="Manage signing keys (gen) and the gateway's API keys (create, ls, revoke).", no_args_is_help=True,
                       rich_markup_mode=None)


@keys_app.command("gen")
def gen(
    name: Path = typer.Argument(Path("flowctl"), metavar="NAME", help="Path prefix: writes NAME.key (mode 0600) and NAME.pub."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Generate an Ed25519 key pair: sign with `flowctl pack --sign NAME.key`, check with `--trust NAME.pub`."""
    from flowctl.console import echo, print_json
    from packer.signing import generate_keypair, key_id, load_public_key

    private_path, public_path = generate_keypair(name)
    kid = key_id(load_public_key(public_path))
    if json_out:
        print_json({"private_key": str(private_path), "public_key": str(public_path), "key_id": kid})
        return
    echo(f"private key {private_path} (keep it secret)")
    echo(f"public key  {public_path}")
    echo(f"key id      {kid}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(keys_app)
