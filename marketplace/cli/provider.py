"""`provider`: sell GPU-hours — register, stake collateral, publish signed offers, run the agent
that does the work, and collect earnings and rewards.

    ape run provider register --name nordic-hydro-1
    ape run provider stake 500
    ape run provider offer --gpu "H100 80GB" --count 8 --region eu-north --green --price 2.50
    ape run provider serve
    ape run provider withdraw
"""

from __future__ import annotations

import inspect
import json
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from marketplace.cli.agent import AgentState, ProviderAgent
from marketplace.cli.common import (
    AccountLoader,
    Session,
    iso_time,
    make_group,
    parse_duration,
    positive_int,
    region_name,
    relative,
    resolve_gpu,
    resolve_region,
    session_options,
    token_option,
)
from marketplace.cli.shared import add_shared_commands
from marketplace.errors import InsufficientFunds, InvalidInput, MarketError
from marketplace.orderbook import message_json
from marketplace.signing import Offer, ProviderProfile

BPS = 10_000
UINT96_MAX = 2**96 - 1
UINT32_MAX = 2**32 - 1
HELP = """Sell GPU-hours on the compute marketplace.

\b
A provider's journey on the devnet (test account 2 by default there):
  ape run provider faucet 1000                 # devnet only: mint mock USDC
  ape run provider register --name my-gpus
  ape run provider stake 500                   # collateral behind your deals
  ape run provider offer --gpu "H100 80GB" --count 8 --region us-west --price 2.50
  ape run provider serve                       # run the jobs you sold (keep it running)
  ape run provider deals
  ape run provider withdraw                    # earnings from the market vault to your wallet

Every command takes --account (Ape alias or test index), --api-url, --rpc-url and --json.
"""


def _doc(text: str) -> str:
    return inspect.cleandoc(text)


def make_cli(account_loader: AccountLoader | None = None) -> click.Group:
    """The `provider` click group; `account_loader` decides how --account becomes a signer
    (the Ape script passes Ape's accounts; the default reads test indices and keyfiles)."""
    cli = make_group("provider", "provider", HELP, account_loader)
    add_shared_commands(cli, side="provider")

    # ───────────────────────────── register ─────────────────────────────

    @cli.command("register", help=_doc("""
        Register your provider profile with the service (a signed ProviderProfile, no transaction).

        \b
        Examples:
          ape run provider register --name nordic-hydro-1
          ape run provider register --name rack-7 --endpoint https://gpus.example.org --account my-key
        """))
    @click.option("--name", required=True, help="Public name of your operation (1–100 characters).")
    @click.option("--endpoint", default="", help="Optional URL where buyers can reach you.")
    @session_options
    def register(s: Session, name: str, endpoint: str) -> None:
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise InvalidInput("--name must be 1 to 100 characters", field="name")
        profile = ProviderProfile(provider=s.address, name=name, endpoint=endpoint.strip())
        out = s.api.register_provider(profile.message(), s.wallet.sign_order(profile))
        s.emit(out.model_dump(mode="json"),
               lambda c: c.print(f"Registered {out.address} as [bold]{out.name}[/bold]"
                                 + (f" ({out.endpoint})" if out.endpoint else "") + "."))

    # ───────────────────────────── stake ─────────────────────────────

    @cli.command("stake", help=_doc("""
        Stake collateral (approve + stake). A share of it is locked behind each deal you open and is
        slashed to the buyer if you do not start the job, or lose a dispute.

        \b
        Examples:
          ape run provider stake 500
          ape run provider stake 250.5 --token mDAI
        """))
    @click.argument("amount")
    @token_option
    @session_options
    def stake(s: Session, amount: str, token: str | None) -> None:
        tok = s.settlement_token(token)
        units = tok.parse(amount)
        staking = s.gateway.staking
        balance = tok.contract.functions.balanceOf(s.address).call()
        if balance < units:
            hint = " (devnet: `ape run provider faucet <amount>`)" if s.chain_id in (31337, 1337) else ""
            raise InsufficientFunds(f"your wallet holds {tok.fmt(balance)}; cannot stake {tok.fmt(units)}{hint}")
        if tok.contract.functions.allowance(s.address, staking.address).call() < units:
            s.wallet.send(tok.contract.functions.approve(staking.address, units), action=f"approve {tok.symbol}")
        sent = s.wallet.send(staking.functions.stake(tok.address, units), action=f"stake {tok.fmt(units)}")
        staked, locked, pending, _ = s.gateway.read("ProviderStaking", "positionOf", s.address, tok.address)
        s.emit({"staked": staked, "locked": locked, "free": staked - locked, "pending": pending, "tx": sent.tx_hash},
               lambda c: c.print(f"Staked {tok.fmt(units)}: {tok.fmt(staked)} staked, {tok.fmt(staked - locked)} free."))

    @cli.command("unstake", help=_doc("""
        Start unstaking free collateral (a cooldown applies), or withdraw it once the cooldown is over.

        \b
        Examples:
          ape run provider unstake 100           # request: starts the cooldown
          ape run provider unstake --withdraw    # after the cooldown: back to your wallet
        """))
    @click.argument("amount", required=False)
    @click.option("--withdraw", "do_withdraw", is_flag=True, help="Withdraw what finished its cooldown.")
    @token_option
    @session_options
    def unstake(s: Session, amount: str | None, do_withdraw: bool, token: str | None) -> None:
        tok = s.token(token)
        if bool(amount) == do_withdraw:
            raise InvalidInput("give an AMOUNT to start unstaking, or --withdraw to collect", field="amount")
        staking = s.gateway.staking.functions
        staked, locked, pending, available_at = s.gateway.read("ProviderStaking", "positionOf", s.address, tok.address)
        now = s.now()
        if do_withdraw:
            if pending == 0:
                raise InvalidInput(f"nothing is unstaking in {tok.symbol}: start with `provider unstake <amount>`",
                                   field="withdraw")
            if now < available_at:
                raise InvalidInput(f"{tok.fmt(pending)} is in its cooldown until {iso_time(available_at)} "
                                   f"({relative(available_at, now)})", field="withdraw")
            sent = s.wallet.send(staking.withdrawUnstaked(tok.address), action="withdrawUnstaked")
            s.emit({"withdrawn": pending, "tx": sent.tx_hash},
                   lambda c: c.print(f"Withdrew {tok.fmt(pending)} of unstaked collateral to your wallet."))
            return
        units = tok.parse(amount)
        free = staked - locked
        if units > free:
            raise InsufficientFunds(f"only {tok.fmt(free)} of your stake is free ({tok.fmt(locked)} is locked behind "
                                    "open deals); unstake at most that")
        sent = s.wallet.send(staking.requestUnstake(tok.address, units), action=f"requestUnstake {tok.fmt(units)}")
        _, _, pending, available_at = s.gateway.read("ProviderStaking", "positionOf", s.address, tok.address)
        s.emit({"pending": pending, "available_at": available_at, "tx": sent.tx_hash},
               lambda c: c.print(f"Unstaking {tok.fmt(pending)}: withdraw it with `provider unstake --withdraw` "
                                 f"from {iso_time(available_at)} ({relative(available_at, s.now())})."))

    # ───────────────────────────── offers ─────────────────────────────

    @cli.command("offer", help=_doc("""
        Sign an offer (EIP-712) and submit it to the service, which matches it against requests.

        The price is in whole tokens per GPU-hour (2.50 = 2.5 mUSDC); capacity is the GPU-hours
        this offer may sell in total, across deals.

        \b
        Examples:
          ape run provider offer --gpu "H100 80GB" --count 8 --region us-west --price 2.50
          ape run provider offer --gpu 7 --count 2 --region eu-north --green --price 1.8 \\
              --min-hours 2 --max-hours 48 --capacity 96 --window 3d
        """))
    @click.option("--gpu", "gpu", required=True, help='GPU model by name ("H100 80GB") or catalogue id (8).')
    @click.option("--count", type=int, default=1, show_default=True, help="GPUs per deal you can give one buyer.")
    @click.option("--vram", type=int, default=None, help="VRAM per GPU in GB [default: the model's].")
    @click.option("--region", required=True, help="Region by name (us-west, eu-north, …) or id.")
    @click.option("--green/--no-green", default=False, show_default=True, help="Renewable energy (earns reward bonus).")
    @click.option("--price", required=True, help="Ask per GPU-hour in whole tokens, e.g. 2.50.")
    @click.option("--min-hours", type=int, default=1, show_default=True, help="Shortest deal you accept.")
    @click.option("--max-hours", type=int, default=24, show_default=True, help="Longest deal you accept.")
    @click.option("--capacity", type=int, default=None, help="Total GPU-hours to sell [default: count × max-hours].")
    @click.option("--window", default="7d", show_default=True, help="How long the GPUs stay available (30m, 12h, 7d).")
    @click.option("--expiry", default=None, help="When the offer stops matching [default: end of the window].")
    @token_option
    @session_options
    def offer(s: Session, gpu: str, count: int, vram: int | None, region: str, green: bool, price: str,
              min_hours: int, max_hours: int, capacity: int | None, window: str, expiry: str | None,
              token: str | None) -> None:
        # Everything is validated before anything is signed.
        model = resolve_gpu(gpu)
        region_id = resolve_region(region)
        positive_int(count, "--count", maximum=65535)
        vram = model.vram_gb if vram is None else positive_int(vram, "--vram", maximum=65535)
        if vram > model.vram_gb:
            raise InvalidInput(f"--vram {vram} is more than a {model.name} has ({model.vram_gb} GB)", field="vram")
        positive_int(min_hours, "--min-hours", maximum=UINT32_MAX)
        positive_int(max_hours, "--max-hours", maximum=UINT32_MAX)
        if max_hours < min_hours:
            raise InvalidInput(f"--max-hours {max_hours} is below --min-hours {min_hours}", field="max_hours")
        capacity = count * max_hours if capacity is None else capacity
        positive_int(capacity, "--capacity", minimum=min_hours, maximum=UINT32_MAX)
        window_seconds = parse_duration(window, what="--window")
        expiry_seconds = parse_duration(expiry, what="--expiry") if expiry else window_seconds
        if expiry_seconds > window_seconds:
            raise InvalidInput("--expiry must not be later than the end of --window", field="expiry")
        if max_hours * 3600 > window_seconds:
            raise InvalidInput(f"--window {window} is shorter than --max-hours {max_hours}: no deal that long could "
                               "finish in it", field="window")
        tok = s.settlement_token(token)
        ask = tok.parse(price, what="price")
        if ask > UINT96_MAX:
            raise InvalidInput("price is too large", field="price")

        collateral_bps = s.gateway.read("ComputeMarket", "collateralBps")
        smallest = -(-ask * min_hours * collateral_bps // BPS)
        largest = -(-ask * count * max_hours * collateral_bps // BPS)
        free = s.gateway.free_stake(s.address, tok.address)
        if free < smallest:
            raise InsufficientFunds(
                f"your free stake is {tok.fmt(free)}; the smallest deal of this offer locks {tok.fmt(smallest)} "
                f"of collateral: stake more first (`provider stake {tok.fmt(smallest - free).split()[0]}`)")
        s.api.health()  # a service that is down fails here, before anything is signed
        now = s.now()
        order = Offer(
            provider=s.address, gpuModel=model.id, gpuCount=count, vramGb=vram, region=region_id, greenEnergy=green,
            token=tok.address, pricePerGpuHour=ask, minHours=min_hours, maxHours=max_hours, capacityGpuHours=capacity,
            availableUntil=now + window_seconds, expiry=now + expiry_seconds, salt=secrets.randbits(128),
            counter=s.gateway.counter_of(s.address),
        )
        submitted = s.api.submit_offer(json.loads(message_json(order)), s.wallet.sign_order(order))
        data = {"order": submitted.order.model_dump(mode="json"),
                "matches": [m.model_dump(mode="json") for m in submitted.matches]}

        def render(console: Console) -> None:
            console.print(f"Offer [bold]{submitted.order.hash}[/bold] is open: {count} × {model.name} "
                          f"({vram} GB) in {region_name(region_id)}{', green' if green else ''} at "
                          f"{tok.fmt(ask)}/GPU-h, {min_hours}–{max_hours} h per deal, {capacity} GPU-h in total, "
                          f"until {iso_time(order.availableUntil)}.")
            if free < largest:
                console.print(f"[yellow]note:[/yellow] a full {count}-GPU × {max_hours} h deal locks {tok.fmt(largest)} "
                              f"collateral; your free stake is {tok.fmt(free)}, so such deals would fail to open.")
            for match in submitted.matches:
                console.print(f"  matched request {match.request_hash[:12]}…: {match.gpu_count} GPUs × "
                              f"{match.deal_hours} h at {tok.fmt(int(match.price_per_gpu_hour))} ({match.state})")
            console.print("Run `provider serve` so your agent starts the jobs you sell.")

        s.emit(data, render)

    # ───────────────────────────── the agent ─────────────────────────────

    @cli.command("serve", help=_doc("""
        Run the provider agent: start each deal you sold before its deadline, run its job with time
        and memory limits, report the time used and the result hash, stop jobs the buyer aborts.

        Restart-safe: progress is kept per chain and deal in --state-dir, and the chain is re-checked
        before every action, so a restarted agent never starts a deal twice and picks up jobs still
        running. Stop it with Ctrl-C (running jobs continue and are picked up by the next start).

        \b
        Examples:
          ape run provider serve
          ape run provider serve --account my-key --memory-mb 4096 --max-parallel 4
          ape run provider serve --once --json      # one pass (waits for the jobs it starts)
        """))
    @click.option("--state-dir", envvar="MARKET_AGENT_DIR", default=None, metavar="DIR",
                  help="Where the agent keeps its state and job output [env MARKET_AGENT_DIR; "
                       "default ~/.local/state/compute-market/agent].")
    @click.option("--poll", "poll_seconds", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
                  help="Seconds between passes.")
    @click.option("--memory-mb", type=click.IntRange(64), default=1024, show_default=True, help="Memory limit per job.")
    @click.option("--max-parallel", type=click.IntRange(1, 64), default=2, show_default=True,
                  help="Jobs run at the same time.")
    @click.option("--once", is_flag=True, help="One pass: start what is due, wait for those jobs, report, exit.")
    @session_options
    def serve(s: Session, state_dir: str | None, poll_seconds: float, memory_mb: int, max_parallel: int,
              once: bool) -> None:
        base = Path(state_dir).expanduser() if state_dir else (
            Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "compute-market" / "agent")
        address = s.address
        s.api.health()  # fail now, in one line, if the service is not there
        state = AgentState(base / f"agent-{s.chain_id}-{address.lower()}.json")

        def log(event: str, data: dict[str, Any]) -> None:
            if s.as_json:
                click.echo(json.dumps({"event": event, **data}, default=str))
            else:
                s.console.print(_describe(event, data))

        agent = ProviderAgent(api=s.api, wallet=s.wallet, state=state, work_dir=base / "jobs", memory_mb=memory_mb,
                              max_parallel=max_parallel, log=log)
        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            agent.run(stop=stop, poll_seconds=poll_seconds, once=once)
        except KeyboardInterrupt:
            log("agent_stopped", {"reason": "interrupted", "jobs_left_running": sorted(agent.jobs)})
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    # ───────────────────────────── rewards ─────────────────────────────

    @cli.command("rewards", help=_doc("""
        Your reward-pool standing per epoch: delivered weight, what you can claim, what you claimed.

        \b
        Examples:
          ape run provider rewards
          ape run provider rewards --epochs 20 --json
        """))
    @click.option("--epochs", type=click.IntRange(1, 520), default=8, show_default=True,
                  help="How many recent epochs to show.")
    @session_options
    def rewards(s: Session, epochs: int) -> None:
        rows, current, ends_at, reward = _reward_rows(s, epochs)
        now = s.now()

        def render(console: Console) -> None:
            table = Table(title=f"Rewards of {s.address} (epoch {current} ends {relative(ends_at, now)})",
                          title_justify="left")
            for column in ("epoch", "pool", "your weight", "share", "claimable", "claimed"):
                table.add_column(column, justify="right")
            for row in rows:
                share = f"{row['weight'] / row['total_weight']:.1%}" if row["total_weight"] else "-"
                table.add_row(str(row["epoch"]) + (" (open)" if row["epoch"] == current else ""),
                              reward.fmt(row["funding"]), f"{row['weight']:,}", share, reward.fmt(row["claimable"]),
                              "yes" if row["claimed"] else "no")
            console.print(table)
            total = sum(r["claimable"] for r in rows)
            if total:
                console.print(f"Claim {reward.fmt(total)} with `provider claim`.")

        s.emit({"current_epoch": current, "epoch_ends_at": ends_at, "reward_token": reward.address, "epochs": rows}, render)

    @cli.command("claim", help=_doc("""
        Claim your rewards of closed epochs (default: every claimable one among recent epochs).

        \b
        Examples:
          ape run provider claim
          ape run provider claim 3 4
        """))
    @click.argument("epoch_ids", nargs=-1, type=int)
    @click.option("--lookback", type=click.IntRange(1, 520), default=52, show_default=True,
                  help="How many recent epochs to scan when no EPOCH is given.")
    @session_options
    def claim(s: Session, epoch_ids: tuple[int, ...], lookback: int) -> None:
        rows, current, _, reward = _reward_rows(s, lookback)
        claimable = {r["epoch"]: r["claimable"] for r in rows if r["claimable"] > 0}
        if epoch_ids:
            for epoch in epoch_ids:
                if epoch >= current:
                    raise InvalidInput(f"epoch {epoch} is not closed yet (current epoch {current})", field="epoch")
                amount = s.gateway.read("RewardPool", "claimable", epoch, s.address)
                if amount == 0:
                    raise InvalidInput(f"nothing to claim in epoch {epoch}", field="epoch")
                claimable[epoch] = amount
            targets = list(epoch_ids)
        else:
            targets = sorted(claimable)
            if not targets:
                raise MarketError(f"nothing to claim in the last {lookback} closed epochs (see `provider rewards`)")
        claimed = []
        for epoch in targets:
            sent = s.wallet.send(s.gateway.rewards.functions.claim(epoch), action=f"claim epoch {epoch}")
            claimed.append({"epoch": epoch, "amount": claimable[epoch], "tx": sent.tx_hash})
        total = sum(c["amount"] for c in claimed)
        s.emit({"claimed": claimed, "total": total},
               lambda c: c.print(f"Claimed {reward.fmt(total)} from epoch(s) {', '.join(str(e) for e in targets)}."))

    return cli


def _reward_rows(s: Session, count: int) -> tuple[list[dict[str, Any]], int, int, Any]:
    pool = s.gateway.rewards.functions
    current = pool.currentEpoch().call()
    ends_at = pool.epochEndsAt(current).call()
    reward = s.reward_token()
    rows = []
    for epoch in range(max(0, current - count + 1), current + 1):
        funding, total_weight, _claimed_total = pool.epochInfo(epoch).call()
        weight = pool.weightOf(epoch, s.address).call()
        rows.append({"epoch": epoch, "funding": funding, "total_weight": total_weight, "weight": weight,
                     "claimable": pool.claimable(epoch, s.address).call(),
                     "claimed": pool.hasClaimed(epoch, s.address).call()})
    return rows, current, ends_at, reward


def _describe(event: str, data: dict[str, Any]) -> str:
    deal = f"deal {data['deal_id']}: " if "deal_id" in data else ""
    texts = {
        "agent_started": lambda: (f"agent for {data['provider']} on chain {data['chain_id']} (device {data['device']}); "
                                  f"state in {data['state_file']}"),
        "deal_started": lambda: f"started on chain (tx {data['tx'][:12]}…), job {data['job']}",
        "job_launched": lambda: (f"job {data['job']} running as pid {data['pid']} on {data['device']} "
                                 f"(limits {int(data['timeout_seconds'])}s, {data['memory_mb']} MB)"),
        "job_adopted": lambda: f"picked up job pid {data['pid']} still running from before the restart",
        "job_rerun": lambda: "the job's process was lost in a restart without a result: running it again",
        "job_late_start": lambda: "deal is running on chain but this agent had no job for it: running it",
        "job_finished": lambda: f"job finished in {data['seconds']}s, result {data['result_hash'][:12]}… {data['metrics']}",
        "job_failed": lambda: f"[red]job failed[/red]: {data['error']}",
        "deal_completed": lambda: (f"[green]completed[/green]: {data['used_seconds']}s used, result "
                                   f"{(data['result_hash'] or '')[:12]}… (tx {data['tx'][:12]}…)"),
        "job_stopped": lambda: f"[yellow]job stopped[/yellow]: the deal is {data['status']} on chain",
        "deal_ended": lambda: f"deal is {data['status']} on chain; nothing more to do",
        "deal_missed": lambda: "[red]start deadline passed[/red] before the agent could start it",
        "deal_skipped": lambda: f"[yellow]skipped[/yellow]: {data['reason']}",
        "no_job_spec": lambda: f"[yellow]waiting[/yellow]: {data['reason']}",
        "waiting": lambda: f"waiting: {data['reason']}",
        "job_left_running": lambda: f"job pid {data['pid']} keeps running; the next `serve` picks it up",
        "waiting_for_chain_clock": lambda: (f"waiting for the chain's clock: the job took {data['used_seconds']}s, "
                                            f"the chain has seen {data['chain_elapsed']}s of the deal"),
        "report_pending": lambda: f"[yellow]not reported yet[/yellow]: {data['reason']}",
        "agent_stopped": lambda: f"agent stopped ({data['reason']})",
        "stale_record": lambda: f"forgot what the agent knew about an older deal with this id ({data['note']})",
        "error": lambda: f"[red]error[/red]: {data['message']}",
    }
    render = texts.get(event)
    return deal + (render() if render else f"{event} {data}")


cli = make_cli()

if __name__ == "__main__":
    cli(prog_name="provider")
