"""One place for the service's settings: environment variables prefixed MARKET_ (or a .env file).

    MARKET_DATABASE_URL=postgresql+psycopg://user:pw@host/db   (default: SQLite file in .run/)
    MARKET_RPC_URL=http://127.0.0.1:8545
    MARKET_REGISTRY=deployments/registry.json
    MARKET_MATCHER_PRIVATE_KEY=0x...   or  MARKET_MATCHER_KEYFILE=path + MARKET_MATCHER_KEYFILE_PASSWORD
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketplace.devnet import PROJECT_ROOT
from marketplace.registry import DEFAULT_REGISTRY_PATH


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MARKET_", env_file=".env", extra="ignore")

    database_url: str = f"sqlite:///{PROJECT_ROOT / '.run' / 'marketplace.db'}"
    rpc_url: str = "http://127.0.0.1:8545"
    registry: Path = Field(default=DEFAULT_REGISTRY_PATH, description="deployment registry written by `ape run deploy`")

    # The matcher submits openDeals / settleMany / claimRefund; it never holds anyone's funds.
    matcher_private_key: SecretStr | None = None
    matcher_keyfile: Path | None = None
    matcher_keyfile_password: SecretStr | None = None

    # The verifier signs attestations; a separate key from the matcher's by design.
    verifier_private_key: SecretStr | None = None
    verifier_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)

    matching_mode: Literal["continuous", "batch"] = "continuous"
    batch_window_seconds: float = Field(default=2.0, gt=0)
    # How a batch window is allocated (marketplace.matching.batch): "auto" re-solves what the LP
    # split exactly (best welfare; ~13 s CPU for a 10,000-order window here), "fast" repairs it by
    # local search (~1.3 s, ~0.2 % less welfare at that size; BENCHMARKS.md, matching section).
    batch_method: Literal["auto", "fast"] = "auto"
    confirmations: int = Field(default=2, ge=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    max_batch_size: int = Field(default=50, ge=1, le=200)
    # Worker processes that check batch intake's signatures beside the service's own process
    # (0: none, everything in-process). One per spare core; see BENCHMARKS.md, service section.
    intake_processes: int = Field(default=0, ge=0, le=32)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    rate_limit_per_minute: int = Field(default=600, ge=1)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("MARKET_DATABASE_URL must be a sqlite:/// or postgresql:// URL")
        return value

    def matcher_key(self) -> bytes | None:
        """The matcher's private key from the env or an encrypted keyfile (never logged)."""
        if self.matcher_private_key is not None:
            return bytes.fromhex(self.matcher_private_key.get_secret_value().removeprefix("0x"))
        if self.matcher_keyfile is not None:
            from eth_account import Account

            password = self.matcher_keyfile_password.get_secret_value() if self.matcher_keyfile_password else ""
            return bytes(Account.decrypt(self.matcher_keyfile.read_text(), password))
        return None


@lru_cache
def get_settings() -> Settings:
    return Settings()
