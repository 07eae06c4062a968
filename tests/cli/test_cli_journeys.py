"""The provider and buyer CLIs end to end on a real anvil with the service running: a provider
from zero to paid (and rewarded), a buyer from zero to a finished job watched live (with the
agent started through the real `ape run provider serve`), a no-show refunded with the provider's
collateral, and a dispute resolved by the arbiter."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from marketplace import jobs
from marketplace.signing import DealStatus

from cli_harness import ARBITER, CCR, CHALLENGE_WINDOW, EPOCH_LENGTH, HOUR, USDC, CliEnv  # noqa: I001

pytestmark = pytest.mark.anvil

REPO_ROOT = Path(__file__).resolve().parents[2]
APE = REPO_ROOT / ".venv" / "bin" / "ape"
FEE_BPS = 100
COLLATERAL_BPS = 2000
TRAIN_SPEC = {"type": "train-logreg", "seed": 7, "samples": 2000, "features": 16, "epochs": 200}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def payout(deal: dict) -> tuple[int, int]:
    """(provider net, fee) the contract pays for a deal's used seconds."""
    gross = deal["pricePerGpuHour"] * deal["gpuCount"] * deal["usedSeconds"] // HOUR
    fee = gross * FEE_BPS // 10_000
    return gross - fee, fee


def test_provider__from_zero__runs_the_job_is_paid_withdraws_and_claims_rewards(cli_env: CliEnv):
    env, provider, buyer = cli_env, 2, 3
    env.provider("faucet", "1000", account=provider)
    profile = env.provider_json("register", "--name", "rack-a", "--endpoint", "https://rack-a.example", account=provider)
    assert profile["registered"] and profile["name"] == "rack-a" and profile["address"] == env.address(provider)
    env.provider("stake", "200", account=provider)
    offer = env.provider_json("offer", "--gpu", "H100 80GB", "--count", "4", "--region", "us-west", "--green",
                              "--price", "2.50", "--max-hours", "8", account=provider)
    message = offer["order"]["order"]
    assert (message["gpuModel"], message["pricePerGpuHour"], message["capacityGpuHours"]) == ("8", "2500000", "32")
    assert [o["hash"] for o in env.provider_json("offers", account=provider)["items"]] == [offer["order"]["hash"]]

    deal_id, request = env.buyer_deal(buyer, gpu="H100 80GB")
    assert request["job_spec"] == TRAIN_SPEC

    served = env.provider("serve", "--once", "--poll", "0.3", "--json", account=provider)
    events = [e["event"] for e in json_lines(served.stdout) if e.get("deal_id") == deal_id]
    # Whole-second block stamps may make the report wait a moment for the chain's clock.
    assert [e for e in events if e != "waiting_for_chain_clock"] == [
        "deal_started", "job_launched", "job_finished", "deal_completed"]
    deal = env.deal(deal_id)
    assert deal["status"] == DealStatus.COMPLETED
    assert "0x" + deal["resultHash"].hex() == jobs.run(TRAIN_SPEC).result_hash
    assert 1 <= deal["usedSeconds"] <= deal["completedAt"] - deal["startedAt"]

    env.warp(CHALLENGE_WINDOW + 1)  # the keeper settles once the challenge window is over
    watched = json_lines(env.buyer("watch", str(deal_id), "--json", "--timeout", "60", "--interval", "0.3",
                                   account=buyer).stdout)
    assert watched[-1]["status"] == "settled"
    net, fee = payout(deal)
    assert (int(watched[-1]["provider_paid"]), int(watched[-1]["fee"])) == (net, fee)

    wallet_before = env.usdc(provider)
    withdrawn = env.provider_json("withdraw", account=provider)
    assert withdrawn["withdrawn"] == net and env.usdc(provider) - wallet_before == net and env.vault(provider) == 0

    # The settlement recorded the delivered GPU-seconds in the current reward epoch; a sponsor funds it.
    pool = env.market.contract("RewardPool")
    credit = env.market.contract("ComputeCredit")
    (delivery,) = pool.events.DeliveryRecorded().get_logs(from_block=0,
                                                          argument_filters={"provider": env.address(provider)})
    epoch = delivery["args"]["epoch"]
    env.send_as(ARBITER, credit.functions.mint(env.address(ARBITER), 1000 * CCR))
    env.send_as(ARBITER, credit.functions.approve(pool.address, 1000 * CCR))
    env.send_as(ARBITER, pool.functions.fund(epoch, 1000 * CCR))
    env.warp(EPOCH_LENGTH)  # the epoch closes; rewards become claimable
    funding, total_weight, _ = pool.functions.epochInfo(epoch).call()
    weight = pool.functions.weightOf(epoch, env.address(provider)).call()
    assert weight == 2 * deal["usedSeconds"] * 12_000 // 10_000  # 2 GPUs, green ×1.2
    share = funding * weight // total_weight
    rows = {r["epoch"]: r for r in env.provider_json("rewards", account=provider)["epochs"]}
    assert rows[epoch]["claimable"] == share > 0
    before = credit.functions.balanceOf(env.address(provider)).call()
    claimed = env.provider_json("claim", account=provider)
    assert claimed["claimed"] == [{"epoch": epoch, "amount": share, "tx": claimed["claimed"][0]["tx"]}]
    assert credit.functions.balanceOf(env.address(provider)).call() - before == share

    # Unstaking: the cooldown holds the collateral, then it comes back.
    env.provider("unstake", "50", account=provider)
    early = env.provider("unstake", "--withdraw", account=provider, ok=False)
    assert early.exit_code == 2 and "cooldown" in early.stderr
    env.warp(7 * 24 * HOUR + 1)
    wallet_before = env.usdc(provider)
    env.provider("unstake", "--withdraw", account=provider)
    assert env.usdc(provider) - wallet_before == 50 * USDC


def test_buyer__from_zero__watches_its_job_run_by_the_ape_run_agent_until_settled(cli_env: CliEnv, tmp_path):
    env, provider, buyer = cli_env, 5, 6
    env.provider_ready(provider, gpu="A100 80GB")
    agent_out = tmp_path / "agent.jsonl"
    environ = {**os.environ, **{k: v for k, v in env.environ.items() if v is not None},
               "MARKET_AGENT_DIR": str(tmp_path / "agent")}
    with open(agent_out, "w") as out, open(tmp_path / "agent.err", "w") as err:
        agent = subprocess.Popen([str(APE), "run", "provider", "serve", "--account", str(provider), "--poll", "0.5",
                                  "--json"], cwd=REPO_ROOT, env=environ, stdout=out, stderr=err,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    stop = threading.Event()
    try:
        env.buyer("faucet", "500", account=buyer)
        nonce = env.nonce(buyer)
        deposit = env.buyer_json("deposit", "100", account=buyer)
        usdc = env.market.usdc.functions
        assert deposit["method"] == "permit" and env.nonce(buyer) == nonce + 1  # one transaction, no approval
        assert env.vault(buyer) == 100 * USDC and usdc.allowance(env.address(buyer), env.market.market.address).call() == 0
        request = env.buyer_json("request", "--gpu", "A100 80GB", "--count", "2", "--region", "north-america",
                                 "--max-price", "3", "--hours", "2", "--job", "train-logreg", "--job-param", "seed=7",
                                 account=buyer)
        (deal_id,) = request["deal_ids"]

        def warp_after_completion() -> None:  # the "time passes" part of the story
            w3 = Web3(HTTPProvider(env.market.devnet.url))
            market = w3.eth.contract(address=env.market.market.address, abi=env.market.market.abi)
            while not stop.is_set():
                if market.functions.getDeal(deal_id).call()[1] == DealStatus.COMPLETED:
                    w3.provider.make_request("evm_increaseTime", [CHALLENGE_WINDOW + 1])
                    w3.provider.make_request("evm_mine", [])
                    return
                stop.wait(0.3)

        threading.Thread(target=warp_after_completion, daemon=True).start()
        watched = env.buyer("watch", str(deal_id), "--timeout", "240", "--interval", "0.5", account=buyer)
        assert "settled" in watched.stdout and "DealSettled" in watched.stdout
    finally:
        stop.set()
        agent.terminate()
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    deal = env.deal(deal_id)
    assert deal["status"] == DealStatus.SETTLED
    assert "0x" + deal["resultHash"].hex() == jobs.run(TRAIN_SPEC).result_hash
    escrow = deal["pricePerGpuHour"] * 2 * 2
    net, fee = payout(deal)
    assert env.vault(buyer) == 100 * USDC - escrow + (escrow - net - fee)
    completed = [e for e in json_lines(agent_out.read_text()) if e["event"] == "deal_completed"]
    assert [(e["deal_id"], e["used_seconds"], e["device"]) for e in completed] == [
        (deal_id, deal["usedSeconds"], completed[0]["device"])]
    assert completed[0]["device"] == "cpu" or completed[0]["device"].startswith("gpu:")


def test_no_show__agent_not_running__buyer_refunded_and_compensated_from_collateral(cli_env: CliEnv):
    env, provider, buyer = cli_env, 7, 8
    env.provider_ready(provider, gpu="A100 40GB")
    deal_id, _ = env.buyer_deal(buyer, gpu="A100 40GB", extra=("--start-by", "10m"))
    deal = env.deal(deal_id)
    escrow = deal["pricePerGpuHour"] * deal["gpuCount"] * deal["bookedHours"]
    collateral = -(-escrow * COLLATERAL_BPS // 10_000)
    vault_before, wallet_before = env.vault(buyer), env.usdc(buyer)

    env.warp(deal["startDeadline"] - env.market.now() + 1)
    watched = json_lines(env.buyer("watch", str(deal_id), "--json", "--timeout", "60", "--interval", "0.3",
                                   account=buyer).stdout)
    assert watched[-1]["status"] == "refunded" and int(watched[-1]["collateral_slashed"]) == collateral
    assert env.vault(buyer) - vault_before == escrow
    assert env.usdc(buyer) - wallet_before == collateral
    stake = env.provider_json("status", account=provider)["stake"]
    assert (stake["staked"], stake["locked"]) == (200 * USDC - collateral, 0)


def test_dispute__buyer_disputes_completed_deal__arbiter_resolves_against_provider(cli_env: CliEnv):
    env, provider, buyer = cli_env, 9, 10
    env.fund_gas(buyer)
    env.provider_ready(provider, gpu="L40S")
    deal_id, _ = env.buyer_deal(buyer, gpu="L40S")
    env.provider("serve", "--once", "--poll", "0.3", account=provider)
    assert env.deal(deal_id)["status"] == DealStatus.COMPLETED

    disputed = env.buyer_json("dispute", str(deal_id), account=buyer)
    assert disputed["status"] == "disputed"

    deal = env.deal(deal_id)
    escrow = deal["pricePerGpuHour"] * deal["gpuCount"] * deal["bookedHours"]
    collateral = -(-escrow * COLLATERAL_BPS // 10_000)
    vault_before, wallet_before = env.vault(buyer), env.usdc(buyer)
    env.send_as(ARBITER, env.market.market.functions.resolveDispute(deal_id, 0, True))

    watched = json_lines(env.buyer("watch", str(deal_id), "--json", "--timeout", "60", "--interval", "0.3",
                                   account=buyer).stdout)
    final = watched[-1]
    assert final["status"] == "resolved"
    assert (int(final["provider_paid"]), int(final["buyer_refund"]), int(final["collateral_slashed"])) == (
        0, escrow, collateral)
    assert env.vault(buyer) - vault_before == escrow and env.usdc(buyer) - wallet_before == collateral
