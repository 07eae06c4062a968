"""`ape run buyer …` with an encrypted `ape accounts` keyfile: Ape's own KeyfileAccount signs both
the EIP-2612 permit (typed data) and the transaction, through marketplace.cli.ape_accounts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from eth_account import Account

from cli_harness import ARBITER, USDC, CliEnv  # noqa: I001

pytestmark = pytest.mark.anvil

REPO_ROOT = Path(__file__).resolve().parents[2]
APE = REPO_ROOT / ".venv" / "bin" / "ape"
KEYFILE_ACCOUNT = 19


def test_ape_run_buyer__keyfile_account__deposits_with_a_permit_it_signed(cli_env: CliEnv, tmp_path):
    env = cli_env
    address = env.address(KEYFILE_ACCOUNT)
    env.fund_gas(KEYFILE_ACCOUNT)
    env.send_as(ARBITER, env.market.usdc.functions.mint(address, 50 * USDC))
    accounts = tmp_path / "ape" / "accounts"
    accounts.mkdir(parents=True)
    (accounts / "trainer-kf.json").write_text(json.dumps(Account.encrypt(env.key(KEYFILE_ACCOUNT), "s3cret")))
    nonce = env.nonce(KEYFILE_ACCOUNT)

    result = subprocess.run(
        [str(APE), "run", "buyer", "deposit", "20", "--account", "trainer-kf", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, **{k: v for k, v in env.environ.items() if v is not None},
             "APE_DATA_FOLDER": str(tmp_path / "ape"), "APE_ACCOUNTS_trainer-kf_PASSPHRASE": "s3cret"},
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["method"] == "permit"  # stdout is pure JSON: Ape's log lines kept out
    assert env.vault(KEYFILE_ACCOUNT) == 20 * USDC and env.nonce(KEYFILE_ACCOUNT) == nonce + 1
    assert "account 'trainer-kf' unlocked for this command" in result.stderr
