"""The provider agent's hard cases on a real chain: it survives its own restart without starting a
deal twice (adopting a job still running, or re-running one whose process died with it), and it
stops a job as soon as the buyer aborts the deal."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from marketplace import jobs
from marketplace.chain.gateway import ChainGateway
from marketplace.chain.wallet import KeySigner, Wallet
from marketplace.cli import agent as agent_module
from marketplace.cli.agent import AgentState, DealRecord, ProviderAgent
from marketplace.client import MarketClient
from marketplace.registry import Registry
from marketplace.signing import DealStatus

from cli_harness import CliEnv  # noqa: I001

pytestmark = pytest.mark.anvil


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def __call__(self, event: str, data: dict) -> None:
        self.events.append((event, data))

    def names(self, deal_id: int) -> list[str]:
        return [e for e, d in self.events if d.get("deal_id") == deal_id]


def make_agent(env: CliEnv, provider: int, state_dir: Path) -> tuple[ProviderAgent, Recorder]:
    """An agent wired exactly as `provider serve` wires it, with a fresh view of the state file."""
    gateway = ChainGateway(env.market.devnet.url, Registry.load(env.market.registry_path))
    recorder = Recorder()
    agent = ProviderAgent(api=MarketClient(env.api_url), wallet=Wallet(gateway, KeySigner(env.key(provider))),
                          state=AgentState(state_dir / "agent.json"), work_dir=state_dir / "jobs", log=recorder,
                          device="cpu")
    return agent, recorder


def deal_started_logs(env: CliEnv, deal_id: int) -> int:
    market = env.market.market
    return len(market.events.DealStarted().get_logs(from_block=0, argument_filters={"dealId": deal_id}))


def hash_job(iterations: int, seed: str) -> tuple[str, ...]:
    return ("--job", "hash-chain", "--job-param", f"iterations={iterations}", "--job-param", f"seed={seed}")


@pytest.mark.parametrize("job_survives", [True, False], ids=["job-still-running", "job-died-with-agent"])
def test_agent_restart__mid_job__never_starts_twice_and_completes_with_the_right_result(cli_env: CliEnv, tmp_path,
                                                                                     job_survives):
    env = cli_env
    provider, buyer, gpu = (11, 12, "RTX 6000 Ada") if job_survives else (13, 14, "RTX 4090")
    for index in (provider, buyer):
        env.fund_gas(index)
    env.provider_ready(provider, gpu=gpu)
    spec = {"type": "hash-chain", "seed": f"restart-{job_survives}", "iterations": 1_000_000}
    deal_id, _ = env.buyer_deal(buyer, gpu=gpu, job=hash_job(spec["iterations"], spec["seed"]))
    nonce = env.nonce(provider)

    first, first_log = make_agent(env, provider, tmp_path)
    first.tick()  # starts the deal on chain and launches the job…
    assert first_log.names(deal_id) == ["deal_started", "job_launched"]
    pid = first.jobs[deal_id].pid
    if not job_survives:
        os.killpg(pid, signal.SIGKILL)  # …and the machine loses the job together with the agent
        first.jobs[deal_id].popen.wait()
    del first  # the agent crashes: nothing is waited for, nothing else is written

    second, second_log = make_agent(env, provider, tmp_path)
    second.run(once=True, poll_seconds=0.2)
    expected = (["job_adopted", "job_finished", "deal_completed"] if job_survives
                else ["job_rerun", "job_launched", "job_finished", "deal_completed"])
    # Whole-second block stamps may make the report wait a moment for the chain's clock.
    assert [n for n in second_log.names(deal_id) if n != "waiting_for_chain_clock"] == expected
    deal = env.deal(deal_id)
    assert deal["status"] == DealStatus.COMPLETED
    assert "0x" + deal["resultHash"].hex() == jobs.run(spec).result_hash
    assert deal_started_logs(env, deal_id) == 1
    assert env.nonce(provider) == nonce + 2  # one startDeal, one completeDeal: nothing sent twice
    record = AgentState(tmp_path / "agent.json").get(env.market.w3.eth.chain_id, deal_id)
    assert (record.phase, record.runs, record.result_hash) == (
        "done", 1 if job_survives else 2, "0x" + deal["resultHash"].hex())

    assert env.buyer_json("accept", str(deal_id), account=buyer)["status"] == "settled"  # no challenge window wait
    third, third_log = make_agent(env, provider, tmp_path)  # a later restart finds nothing left to do
    third.tick()
    assert third_log.names(deal_id) == [] and env.nonce(provider) == nonce + 2


def test_agent__buyer_aborts_running_deal__job_is_stopped(cli_env: CliEnv, tmp_path):
    env, provider, buyer, gpu = cli_env, 15, 16, "L4"
    for index in (provider, buyer):
        env.fund_gas(index)
    env.provider_ready(provider, gpu=gpu)
    deal_id, _ = env.buyer_deal(buyer, gpu=gpu, job=hash_job(50_000_000, "long"))
    # Left over from a devnet that was reset: same chain id and deal id, another deal. Not to be trusted.
    AgentState(tmp_path / "agent.json").save(DealRecord(
        chain_id=env.w3.eth.chain_id, deal_id=deal_id, provider=env.address(provider), phase="skipped",
        fingerprint="0xSomeoneElse:1:1:1"))
    agent, log = make_agent(env, provider, tmp_path)
    agent.tick()
    job = agent.jobs[deal_id]
    assert job.running()

    aborted = env.buyer_json("abort", str(deal_id), account=buyer)
    assert aborted["status"] == "aborted"
    agent.tick()
    assert log.names(deal_id) == ["stale_record", "deal_started", "job_launched", "job_stopped", "deal_ended"]
    assert deal_id not in agent.jobs
    assert not psutil.pid_exists(job.pid) or psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE
    record = agent.state.get(env.market.w3.eth.chain_id, deal_id)
    assert record.phase == "stopped" and env.deal(deal_id)["status"] == DealStatus.ABORTED



@contextmanager
def chain_clock_frozen(env: CliEnv) -> Iterator[None]:
    """Every block anvil mines meanwhile carries the same timestamp (no chain time passes)."""
    env.w3.provider.make_request("anvil_setBlockTimestampInterval", [0])
    try:
        yield
    finally:
        env.w3.provider.make_request("anvil_removeBlockTimestampInterval", [])


def finished_job_waits_for_the_chain(env: CliEnv, tmp_path: Path, provider: int, buyer: int, gpu: str
                                     ) -> tuple[int, ProviderAgent, Recorder]:
    """A deal started while the chain's clock stands still, whose (instant) job has ended."""
    for index in (provider, buyer):
        env.fund_gas(index)
    env.provider_ready(provider, gpu=gpu)
    deal_id, _ = env.buyer_deal(buyer, gpu=gpu, job=hash_job(1_000, f"instant-{provider}"))
    agent, log = make_agent(env, provider, tmp_path)
    agent.tick()
    env.wait_until(lambda: not agent.jobs[deal_id].running(), timeout=30, what="the job to end")
    agent.tick()
    assert log.names(deal_id) == ["deal_started", "job_launched", "job_finished", "waiting_for_chain_clock"]
    assert env.deal(deal_id)["status"] == DealStatus.RUNNING
    assert agent.state.get(env.w3.eth.chain_id, deal_id).phase == "finished"
    return deal_id, agent, log


def test_agent__job_ends_before_the_chain_clock_moves__waits_for_it_and_never_reports_zero_seconds(
        cli_env: CliEnv, tmp_path):
    """Blocks are stamped in whole seconds, so a job can end before the chain has seen one second of
    it. Trimming the usage to the chain's elapsed time would then report 0 s and pay the provider
    nothing for finished work (the flake CI once hit); the agent waits for the chain's clock instead."""
    env = cli_env
    with chain_clock_frozen(env):
        deal_id, agent, log = finished_job_waits_for_the_chain(env, tmp_path, 30, 31, "RTX 3090")
    agent.run(once=True, poll_seconds=0.2)  # the clock runs again: the report goes through
    assert log.names(deal_id)[-1] == "deal_completed"
    deal = env.deal(deal_id)
    assert deal["status"] == DealStatus.COMPLETED
    assert 1 <= deal["usedSeconds"] <= deal["completedAt"] - deal["startedAt"]
    assert agent.state.get(env.w3.eth.chain_id, deal_id).phase == "done"


def test_agent__chain_clock_never_catches_up__reports_what_the_chain_accepts_after_the_grace(
        cli_env: CliEnv, tmp_path, monkeypatch):
    env = cli_env
    monkeypatch.setattr(agent_module, "CHAIN_CLOCK_GRACE_SECONDS", 1.0)
    with chain_clock_frozen(env):
        deal_id, agent, log = finished_job_waits_for_the_chain(env, tmp_path, 32, 33, "L40S")
        started = time.monotonic()
        agent.run(once=True, poll_seconds=0.2)
        assert time.monotonic() - started >= 1.0  # it did wait out the grace first
    assert log.names(deal_id)[-1] == "deal_completed"
    deal = env.deal(deal_id)
    assert (deal["status"], deal["usedSeconds"]) == (DealStatus.COMPLETED, 0)  # no chain time passed
