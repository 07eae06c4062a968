"""Listing and cancelling orders from the CLIs: one order by a signed CancelOrder (by hash or by
the prefix the tables show), optionally also on chain, and all of them through incrementCounter."""

from __future__ import annotations

import pytest

from cli_harness import CliEnv  # noqa: I001

pytestmark = pytest.mark.anvil

PROVIDER, BUYER = 20, 21


def test_cancel__one_by_prefix_one_on_chain_then_all__service_and_chain_agree(cli_env: CliEnv):
    env = cli_env
    for index in (PROVIDER, BUYER):
        env.fund_gas(index)
    env.provider("faucet", "100", account=PROVIDER)
    env.provider("stake", "50", account=PROVIDER)
    hashes = [env.provider_json("offer", "--gpu", "MI300X 192GB", "--region", "eu-west", "--price", price,
                                account=PROVIDER)["order"]["hash"] for price in ("9.10", "9.20", "9.30", "9.40")]
    listed = env.provider_json("offers", account=PROVIDER)
    assert sorted(o["hash"] for o in listed["items"]) == sorted(hashes)
    table = env.provider("offers", account=PROVIDER).stdout
    assert hashes[0][:12] in table and "9.10 mUSDC" in table

    nonce = env.nonce(PROVIDER)
    one = env.provider_json("cancel", hashes[0][:12] + "…", account=PROVIDER)  # as copied from the table
    assert one == {"hash": hashes[0], "status": "cancelled", "tx": None} and env.nonce(PROVIDER) == nonce

    on_chain = env.provider_json("cancel", hashes[1], "--on-chain", account=PROVIDER)
    assert on_chain["status"] == "cancelled" and env.nonce(PROVIDER) == nonce + 1
    assert env.market.market.functions.orderState(bytes.fromhex(hashes[1][2:])).call() == [0, True]

    again = env.provider("cancel", hashes[0], account=PROVIDER, ok=False)
    assert again.exit_code == 1 and f"order {hashes[0]} is already cancelled" in again.stderr

    everything = env.provider_json("cancel", "--all", account=PROVIDER)
    assert everything["counter"] == 1 and sorted(everything["withdrawn_from_service"]) == sorted(hashes[2:])
    assert env.market.market.functions.counterOf(env.address(PROVIDER)).call() == 1
    assert env.provider_json("offers", account=PROVIDER)["total"] == 0
    statuses = {o["hash"]: o["status"] for o in env.provider_json("offers", "--status", "all", account=PROVIDER)["items"]}
    assert statuses == dict.fromkeys(hashes, "cancelled")

    # A new offer is signed under the new counter and is accepted.
    fresh = env.provider_json("offer", "--gpu", "MI300X 192GB", "--region", "eu-west", "--price", "9", account=PROVIDER)
    assert fresh["order"]["order"]["counter"] == "1"


def test_requests__listed_and_cancelled_by_the_buyer(cli_env: CliEnv):
    env = cli_env
    env.buyer("faucet", "100", account=BUYER)
    env.buyer("deposit", "50", account=BUYER)
    request = env.buyer_json("request", "--gpu", "H200 141GB", "--max-price", "1.25", "--hours", "3", "--region",
                             "asia-pacific", "--job", "hash-chain", "--job-param", "iterations=1000", account=BUYER)
    assert request["deal_ids"] == [] and request["job_spec"] == {"type": "hash-chain", "seed": "", "iterations": 1000}
    message = request["order"]["order"]
    assert (message["regionMask"], message["maxPricePerGpuHour"], message["minHours"]) == (str(0b111 << 8), "1250000", "3")
    order_hash = request["order"]["hash"]
    assert [o["hash"] for o in env.buyer_json("requests", account=BUYER)["items"]] == [order_hash]
    assert env.buyer_json("cancel", order_hash, account=BUYER)["status"] == "cancelled"
    assert env.buyer_json("requests", account=BUYER)["total"] == 0
    withdrawn = env.buyer_json("withdraw", account=BUYER)
    assert withdrawn["withdrawn"] == 50 * 10**6 and withdrawn["vault"] == 0
