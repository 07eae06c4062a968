"""Ape accounts as marketplace signers, for the `ape run provider|buyer` scripts.

    --account 2          Ape test account 2 (the devnet mnemonic; local chains only)
    --account my-key     `ape accounts` alias: Ape's own KeyfileAccount signs. Its passphrase comes
                         from APE_ACCOUNTS_<alias>_PASSPHRASE or one prompt, and the account then
                         signs this command's messages and transactions without asking again.

Only the scripts import this module (it imports Ape); the service and tests need not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from eth_account.messages import SignableMessage

from marketplace.chain.wallet import KeySigner, Signer
from marketplace.cli.common import default_account_index, is_local_chain, parse_test_index
from marketplace.errors import InvalidInput


class ApeAccountSigner:
    """Adapter from an Ape AccountAPI (keyfile, hardware wallet plugin, …) to the Signer protocol."""

    def __init__(self, account: Any):
        self.account = account
        self._ready = False

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _unlock(self) -> None:
        if self._ready:
            return
        if hasattr(self.account, "set_autosign"):
            # One passphrase (env APE_ACCOUNTS_<alias>_PASSPHRASE or a prompt) for this command.
            with _quiet_ape():
                self.account.set_autosign(True)
            click.echo(f"account '{self.account.alias}' unlocked for this command", err=True)
        self._ready = True

    def sign_message(self, message: SignableMessage) -> bytes:
        self._unlock()
        with _quiet_ape():
            signature = self.account.sign_message(message)
        if signature is None:
            raise InvalidInput(f"account {self.account.alias or self.address} declined to sign", field="account")
        return bytes(signature.encode_rsv())

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        from ape import networks

        self._unlock()
        fields = {k: v for k, v in tx.items() if k != "from"}
        if "data" in fields and isinstance(fields["data"], str):
            fields["data"] = bytes.fromhex(fields["data"].removeprefix("0x"))
        txn = networks.ethereum.create_transaction(**fields)
        with _quiet_ape():
            signed = self.account.sign_transaction(txn)
        if signed is None:
            raise InvalidInput(f"account {self.account.alias or self.address} declined to sign", field="account")
        return bytes(signed.serialize_transaction())


@contextmanager
def _quiet_ape() -> Iterator[None]:
    """Ape logs to stdout (which would corrupt --json output); only its errors get through."""
    from ape.logging import logger

    with logger.at_level("ERROR"):
        yield


def ape_account_loader(spec: str | None, chain_id: int, role: str) -> Signer:
    from ape import accounts
    from ape.exceptions import AccountsError

    if spec is None and os.environ.get("MARKET_PRIVATE_KEY"):
        return KeySigner(os.environ["MARKET_PRIVATE_KEY"])
    index = default_account_index(role, chain_id) if spec is None else parse_test_index(spec)
    if index is not None:
        if not is_local_chain(chain_id):
            raise InvalidInput(f"test account {index} is only for local devnets, not chain {chain_id}", field="account")
        return KeySigner(accounts.test_accounts[index].private_key)
    try:
        account = accounts.load(spec)
    except (AccountsError, IndexError, KeyError):
        aliases = ", ".join(accounts.aliases) or "none"
        raise InvalidInput(f"no Ape account named {spec!r} (known: {aliases}); see `ape accounts list`, or give a "
                           "test account index", field="account") from None
    private_key = getattr(account, "private_key", None)
    if private_key is not None and not hasattr(account, "keyfile_path"):
        return KeySigner(private_key)
    return ApeAccountSigner(account)
