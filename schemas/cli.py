"""``fiml schemas ...`` commands; mounted by the top-level CLI with ``add_typer(app)``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(help="Contracts: export JSON Schemas and the AsyncAPI document.")


@app.callback()
def _main() -> None:
    """Contracts: export JSON Schemas and the AsyncAPI document."""
    # A callback keeps ``export`` a subcommand even while it is the only one.


@app.command("export")
def export_command(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Output directory (default: the package's schemas/json)."),
    ] = None,
) -> None:
    """Write <Model>.schema.json for every record and message, and asyncapi.json."""
    # Imported here: pydantic schema generation is only needed when this command runs.
    from schemas.jsonschema import DEFAULT_DIR, export

    written = export(directory or DEFAULT_DIR)
    typer.echo(f"wrote {len(written)} files to {directory or DEFAULT_DIR}")
