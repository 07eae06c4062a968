"""`marketplace serve` (or `python -m marketplace serve`): the API plus the background loops."""

from __future__ import annotations

import logging
import sys

import click

from marketplace.config import Settings
from marketplace.errors import MarketError
from marketplace.registry import RegistryError


@click.group()
def cli() -> None:
    """Compute Marketplace matchmaking service."""


@cli.command()
@click.option("--host", default=None, help="Listen address (default MARKET_API_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default MARKET_API_PORT or 8000).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host: str | None, port: int | None, log_level: str) -> None:
    """Start the API and the matching, sending, indexing, keeping and verifying loops.

    \b
    Example (devnet, after `make deploy`):
      MARKET_MATCHER_PRIVATE_KEY=0x... MARKET_CONFIRMATIONS=0 marketplace serve --port 8000
    """
    import uvicorn

    from marketplace.api.app import create_app
    from marketplace.service import MarketService, tune_gc_for_serving

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        service = MarketService(settings)
        service.gateway.chain_id  # noqa: B018 - fail now, with a clear message, if no node answers
    except (MarketError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
        raise click.ClickException(f"cannot start: {exc.__class__.__name__}: {exc}") from None
    app = create_app(service, start_loops=True)
    tune_gc_for_serving()
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port, log_level=log_level)


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (MARKET_DATABASE_URL)."""
    from marketplace.db.session import migrate as run_migrations

    settings = Settings()
    run_migrations(settings.database_url)
    click.echo(f"database at head: {settings.database_url}")


def main() -> None:
    cli(prog_name="marketplace")


if __name__ == "__main__":
    sys.exit(main())
