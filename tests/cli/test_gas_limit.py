"""The gas limit sent with a transaction must cover the path the *mining* block takes, not only
the simulated one: an abort simulated in the deal's first second skips the reward pool (0 s
delivered), the same abort mined a second later calls it and writes fresh storage slots."""

from __future__ import annotations

from marketplace.chain.gas import gas_limit
from marketplace.signing import DealStatus

from cli_harness import CliEnv  # noqa: I001


def test_abort_estimated_at_0_seconds_mined_at_2__the_gas_limit_covers_the_reward_call(cli_env: CliEnv):
    env, provider, buyer, gpu = cli_env, 34, 35, "H200 141GB"
    for index in (provider, buyer):
        env.fund_gas(index)
    env.provider_ready(provider, gpu=gpu)
    deal_id, _ = env.buyer_deal(buyer, gpu=gpu)
    market = env.market.market
    w3 = env.w3

    w3.provider.make_request("anvil_setBlockTimestampInterval", [0])  # no chain time passes meanwhile
    try:
        env.send_as(provider, market.functions.startDeal(deal_id))
        abort = market.functions.abort(deal_id)
        estimate = abort.estimate_gas({"from": env.address(buyer)}, block_identifier="pending")
    finally:
        w3.provider.make_request("anvil_removeBlockTimestampInterval", [])
    w3.provider.make_request("evm_increaseTime", [2])

    def send_abort(gas: int) -> dict:
        tx = abort.build_transaction({"from": env.address(buyer), "gas": gas,
                                      "nonce": w3.eth.get_transaction_count(env.address(buyer), "pending")})
        signed = w3.eth.account.sign_transaction(tx, env.key(buyer))
        return w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))

    # What the wallet used to send (estimate × 1.2 + 10k) runs out of gas in the reward call.
    assert send_abort(int(estimate * 1.2) + 10_000)["status"] == 0
    assert env.deal(deal_id)["status"] == DealStatus.RUNNING
    receipt = send_abort(gas_limit(estimate))
    assert receipt["status"] == 1 and receipt["gasUsed"] > estimate
    deal = env.deal(deal_id)
    assert deal["status"] == DealStatus.ABORTED and deal["usedSeconds"] >= 2
