"""Bad input and missing infrastructure: one line saying what is wrong and what to do, a non-zero
exit code, no traceback, and nothing signed or sent (the account's nonce and its orders at the
service are unchanged)."""

from __future__ import annotations

import pytest

from marketplace.client import MarketClient

from cli_harness import CliEnv, free_port  # noqa: I001

pytestmark = pytest.mark.anvil

BUYER, PROVIDER = 17, 18
DEAD_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
JOB = ("--job", "train-logreg")


@pytest.fixture(scope="module")
def env(cli_env: CliEnv) -> CliEnv:
    for index in (BUYER, PROVIDER):
        cli_env.fund_gas(index)
    cli_env.provider("faucet", "100", account=PROVIDER)
    cli_env.provider("stake", "50", account=PROVIDER)  # so a well-formed offer would be accepted
    return cli_env


CASES = [
    pytest.param("provider", ("offer", "--gpu", "H900 80GB", "--region", "us-west", "--price", "2"),
                 2, "unknown GPU model 'H900 80GB'; choose one of: RTX 4090 (1),", id="unknown-gpu-model"),
    pytest.param("buyer", ("request", "--gpu", "H100 80GB", "--max-price", "3", "--hours", "-3", *JOB),
                 2, "--hours must be at least 1, got -3", id="negative-hours"),
    pytest.param("provider", ("offer", "--gpu", "H100 80GB", "--region", "us-west", "--price", "2.5000001"),
                 2, "price 2.5000001 has 7 decimals but mUSDC has only 6", id="price-too-many-decimals"),
    pytest.param("buyer", ("request", "--gpu", "H100 80GB", "--count", "2", "--max-price", "3", "--hours", "4", *JOB),
                 3, "your market vault holds 0.00 mUSDC; this request escrows up to 24.00 mUSDC "
                    "(3.00 mUSDC × 2 GPU × 4 h): deposit at least 24.00 more with `buyer deposit 24.00`",
                 id="insufficient-deposit"),
    pytest.param("buyer", ("watch", "424242"), 1, "there is no deal 424242 on chain", id="unknown-deal-watch"),
    pytest.param("buyer", ("dispute", "424242"), 1, "there is no deal 424242 on chain", id="unknown-deal-dispute"),
    pytest.param("provider", ("offer", "--gpu", "H100 80GB", "--region", "us-west", "--price", "2",
                              "--api-url", DEAD_URL),
                 4, f"the marketplace service is not reachable at {DEAD_URL}", id="service-not-running"),
    pytest.param("buyer", ("deposit", "10", "--rpc-url", DEAD_URL),
                 4, f"no chain node answers at {DEAD_URL}: start the devnet with `make devnet`", id="devnet-not-running"),
    pytest.param("buyer", ("request", "--gpu", "any", "--max-price", "3", "--hours", "1", "--job", "mine-coins"),
                 2, "unknown job type 'mine-coins'; the catalogue has: hash-chain, train-logreg", id="unknown-job"),
    pytest.param("buyer", ("request", "--gpu", "any", "--max-price", "3", "--hours", "1", *JOB,
                           "--job-param", "epochs=0"),
                 2, "job parameter epochs must be in [1, 100000], got 0", id="job-param-out-of-range"),
    pytest.param("provider", ("offer", "--gpu", "H100 80GB", "--region", "atlantis", "--price", "2"),
                 2, "unknown region 'atlantis'", id="unknown-region"),
    pytest.param("provider", ("stake", "-5"), 2, "-5 is negative: amounts, counts and ids must be positive",
                 id="negative-stake"),
    pytest.param("provider", ("offer", "--gpu", "H100 80GB", "--region", "us-west", "--price", "-2"), 2,
                 "price must not be negative", id="negative-price"),
    pytest.param("buyer", ("withdraw", "5"), 3, "your market vault holds 0.00 mUSDC; cannot withdraw 5.00 mUSDC",
                 id="withdraw-more-than-vault"),
    pytest.param("provider", ("offer", "--price", "2", "--region", "us-west"), 2,
                 "Missing option '--gpu'. (see `provider offer --help`)", id="missing-option"),
]


@pytest.mark.parametrize(("side", "args", "exit_code", "message"), CASES)
def test_bad_input__one_line_error__nonzero_exit_and_nothing_sent(env: CliEnv, side, args, exit_code, message):
    account = PROVIDER if side == "provider" else BUYER
    api = MarketClient(env.api_url)
    nonce, orders = env.nonce(account), api.orders(owner=env.address(account)).total

    result = (env.provider if side == "provider" else env.buyer)(*args, account=account, ok=False)

    assert result.exit_code == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and result.stdout == ""
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert env.nonce(account) == nonce
    assert api.orders(owner=env.address(account)).total == orders
