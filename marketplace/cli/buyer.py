"""`buyer`: buy GPU-hours for a job — deposit into the market vault, publish a signed request with
a job spec from the catalogue, watch the deal, then accept, dispute or abort it.

    ape run buyer deposit 100
    ape run buyer request --gpu "H100 80GB" --count 2 --max-price 3.00 --hours 4 \\
        --job train-logreg --job-param seed=7
    ape run buyer watch 12
"""

from __future__ import annotations

import inspect
import json
import secrets
import time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from marketplace.api.schemas import DealDetailOut
from marketplace.cli.common import (
    TERMINAL_DEAL_STATUSES,
    AccountLoader,
    Session,
    Token,
    build_job_spec,
    gpu_name,
    human_seconds,
    iso_time,
    make_group,
    parse_when,
    positive_int,
    region_name,
    relative,
    resolve_gpu,
    resolve_regions,
    session_options,
    short,
    token_option,
)
from marketplace.cli.shared import TokenCache, add_shared_commands, deal_json
from marketplace.errors import InsufficientFunds, InvalidInput, MarketError, NotFound
from marketplace.matching.catalog import ANY_GPU_MODEL, KNOWN_REGIONS_MASK, REGIONS
from marketplace.orderbook import job_spec_hash, message_json
from marketplace.signing import DealStatus, Request, SettlementRule

UINT96_MAX = 2**96 - 1
UINT32_MAX = 2**32 - 1
SETTLEMENT_RULES = {"challenge": SettlementRule.CHALLENGE_WINDOW, "accept": SettlementRule.BUYER_ACCEPTANCE,
                    "attest": SettlementRule.ATTESTATION}
STATUS_STYLE = {"open": "cyan", "running": "blue", "completed": "magenta", "disputed": "yellow", "settled": "green",
                "refunded": "yellow", "aborted": "yellow", "resolved": "green"}
HELP = """Buy GPU-hours on the compute marketplace.

\b
A buyer's journey on the devnet (test account 3 by default there):
  ape run buyer faucet 1000                    # devnet only: mint mock USDC
  ape run buyer deposit 100                    # into the market vault (EIP-2612 permit: one transaction)
  ape run buyer request --gpu "H100 80GB" --count 2 --max-price 3.00 --hours 4 \\
      --job train-logreg --job-param seed=7
  ape run buyer watch 1                        # live status until the deal settles
  ape run buyer accept 1   |   ape run buyer dispute 1
  ape run buyer withdraw                       # refunds and leftovers back to your wallet

Every command takes --account (Ape alias or test index), --api-url, --rpc-url and --json.
"""


def _doc(text: str) -> str:
    return inspect.cleandoc(text)


def make_cli(account_loader: AccountLoader | None = None) -> click.Group:
    """The `buyer` click group (see provider.make_cli for `account_loader`)."""
    cli = make_group("buyer", "buyer", HELP, account_loader)
    add_shared_commands(cli, side="buyer")

    # ───────────────────────────── vault ─────────────────────────────

    @cli.command("deposit", help=_doc("""
        Deposit tokens into your market vault, which escrows your deals. Uses an EIP-2612 permit
        (one transaction, no separate approval) when the token supports it.

        \b
        Examples:
          ape run buyer deposit 100
          ape run buyer deposit 25.5 --token mDAI --no-permit
        """))
    @click.argument("amount")
    @click.option("--permit/--no-permit", default=True, show_default=True,
                  help="Sign an EIP-2612 permit instead of sending an approval first.")
    @token_option
    @session_options
    def deposit(s: Session, amount: str, permit: bool, token: str | None) -> None:
        tok = s.settlement_token(token)
        units = tok.parse(amount)
        market = s.gateway.market
        balance = tok.contract.functions.balanceOf(s.address).call()
        if balance < units:
            hint = " (devnet: `ape run buyer faucet <amount>`)" if s.chain_id in (31337, 1337) else ""
            raise InsufficientFunds(f"your wallet holds {tok.fmt(balance)}; cannot deposit {tok.fmt(units)}{hint}")
        domain = _permit_domain(s, tok) if permit else None
        if domain is not None:
            deadline = s.now() + 3600
            nonce = tok.contract.functions.nonces(s.address).call()
            signature = bytes.fromhex(s.wallet.sign_typed(_permit_typed_data(
                domain, s.address, market.address, units, nonce, deadline))[2:])
            r, sig_s, v = signature[:32], signature[32:64], signature[64]
            sent = s.wallet.send(market.functions.depositWithPermit(tok.address, units, deadline, v, r, sig_s),
                                 action=f"depositWithPermit {tok.fmt(units)}")
            method = "permit"
        else:
            if tok.contract.functions.allowance(s.address, market.address).call() < units:
                s.wallet.send(tok.contract.functions.approve(market.address, units), action=f"approve {tok.symbol}")
            sent = s.wallet.send(market.functions.deposit(tok.address, units), action=f"deposit {tok.fmt(units)}")
            method = "approve"
        vault = s.gateway.vault_balance(s.address, tok.address)
        s.emit({"deposited": units, "vault": vault, "method": method, "tx": sent.tx_hash},
               lambda c: c.print(f"Deposited {tok.fmt(units)} "
                                 f"({'with a permit' if method == 'permit' else 'approve + deposit'}); "
                                 f"vault holds {tok.fmt(vault)}."))

    # ───────────────────────────── requests ─────────────────────────────

    @cli.command("request", help=_doc("""
        Sign a request for GPU-hours (EIP-712) with the job it pays for, and submit both to the service.

        The job comes from the catalogue (hash-chain, train-logreg); every parameter is written into
        the spec, whose hash the request signs, so the provider's agent runs exactly that job.

        \b
        Examples:
          ape run buyer request --gpu "H100 80GB" --count 2 --max-price 3.00 --hours 4 \\
              --job train-logreg --job-param seed=7 --job-param epochs=500
          ape run buyer request --gpu any --min-vram 40 --region europe --green-only --max-price 2 \\
              --hours 1 --start-by 30m --job hash-chain --job-param iterations=1000000
          ape run buyer request --gpu A100-80GB --max-price 1.5 --hours 2 --job-spec @job.json --settle accept
        """))
    @click.option("--gpu", "gpu", required=True, help='GPU model by name ("H100 80GB"), id (8), or "any".')
    @click.option("--count", type=int, default=1, show_default=True, help="GPUs needed.")
    @click.option("--min-vram", type=int, default=None, help="Minimum VRAM per GPU in GB [default: the model's].")
    @click.option("--region", "regions", multiple=True,
                  help="Allowed region or continent (repeatable; us-west, europe, …) [default: anywhere].")
    @click.option("--green-only", is_flag=True, help="Only renewable-energy offers.")
    @click.option("--max-price", required=True, help="Most you pay per GPU-hour, in whole tokens (e.g. 3.00).")
    @click.option("--hours", type=int, required=True, help="Hours of compute the job needs.")
    @click.option("--min-hours", type=int, default=None, help="Smallest fill you accept [default: all hours in one deal].")
    @click.option("--start-by", default="1h", show_default=True,
                  help="Latest start: a duration from now (30m, 2h), an ISO time, or @unix-seconds.")
    @click.option("--expiry", default=None, help="When the request stops matching [default: --start-by].")
    @click.option("--job", "job_type", default=None, help="Job type from the catalogue: hash-chain, train-logreg.")
    @click.option("--job-param", "job_params", multiple=True, metavar="NAME=VALUE", help="Job parameter (repeatable).")
    @click.option("--job-spec", default=None, metavar="JSON|@FILE", help="A whole job spec instead of --job/--job-param.")
    @click.option("--settle", type=click.Choice(list(SETTLEMENT_RULES)), default="challenge", show_default=True,
                  help="How the deal settles: after the challenge window, on your acceptance, or on a verifier's attestation.")
    @click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until matched deals open on chain.")
    @token_option
    @session_options
    def request(s: Session, gpu: str, count: int, min_vram: int | None, regions: tuple[str, ...], green_only: bool,
                max_price: str, hours: int, min_hours: int | None, start_by: str, expiry: str | None,
                job_type: str | None, job_params: tuple[str, ...], job_spec: str | None, settle: str, wait: bool,
                token: str | None) -> None:
        # Everything is validated before anything is signed.
        model = resolve_gpu(gpu, allow_any=True)
        positive_int(count, "--count", maximum=65535)
        if min_vram is None:
            min_vram = model.vram_gb if model else 0
        positive_int(min_vram, "--min-vram", minimum=0, maximum=65535)
        region_ids = resolve_regions(regions) if regions else sorted(REGIONS)
        mask = sum(1 << r for r in region_ids) if regions else KNOWN_REGIONS_MASK
        positive_int(hours, "--hours", maximum=UINT32_MAX)
        min_hours = hours if min_hours is None else positive_int(min_hours, "--min-hours", maximum=hours)
        spec = build_job_spec(job_type, job_params, job_spec)
        tok = s.settlement_token(token)
        bid = tok.parse(max_price, what="max-price")
        if bid > UINT96_MAX:
            raise InvalidInput("max-price is too large", field="max_price")
        now = s.now()
        start_deadline = parse_when(start_by, now, what="--start-by")
        expires = parse_when(expiry, now, what="--expiry") if expiry else start_deadline

        needed = bid * count * min_hours
        worst = bid * count * hours
        vault = s.gateway.vault_balance(s.address, tok.address)
        if vault < needed:
            more = tok.fmt(needed - vault).split()[0]
            raise InsufficientFunds(
                f"your market vault holds {tok.fmt(vault)}; this request escrows up to {tok.fmt(needed)} "
                f"({tok.fmt(bid)} × {count} GPU × {min_hours} h): deposit at least {more} more with "
                f"`buyer deposit {more}`")
        s.api.health()  # a service that is down fails here, before anything is signed
        order = Request(
            trainer=s.address, gpuModel=model.id if model else ANY_GPU_MODEL, gpuCount=count, minVramGb=min_vram,
            regionMask=mask, greenOnly=green_only, token=tok.address, maxPricePerGpuHour=bid, totalHours=hours,
            minHours=min_hours, startBy=start_deadline, expiry=expires, jobSpecHash=job_spec_hash(spec),
            settlementRule=int(SETTLEMENT_RULES[settle]), salt=secrets.randbits(128),
            counter=s.gateway.counter_of(s.address),
        )
        submitted = s.api.submit_request(json.loads(message_json(order)), s.wallet.sign_order(order), spec)
        matches = submitted.matches
        if wait and any(m.state == "proposed" for m in matches):
            with s.waiting("waiting for the matched deal(s) to open on chain…"):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    matches = s.api.order_matches(submitted.order.hash)
                    if all(m.state != "proposed" for m in matches) and all(
                            _indexed(s, m.deal_id) for m in matches if m.deal_id is not None):
                        break  # opened on chain and visible at the service (so `watch` works at once)
                    time.sleep(0.3)
        data = {"order": submitted.order.model_dump(mode="json"), "job_spec": spec,
                "matches": [m.model_dump(mode="json") for m in matches],
                "deal_ids": [m.deal_id for m in matches if m.deal_id is not None]}

        def render(console: Console) -> None:
            where = ", ".join(region_name(r) for r in region_ids) if regions else "any region"
            console.print(f"Request [bold]{submitted.order.hash}[/bold]: {count} × {gpu_name(order.gpuModel)} "
                          f"(≥{min_vram} GB) in {where}{', green only' if green_only else ''}, ≤{tok.fmt(bid)}/GPU-h, "
                          f"{hours} h, start by {iso_time(start_deadline)}; job {spec['type']} "
                          f"({order.jobSpecHash[:12]}…), escrow up to {tok.fmt(worst)}.")
            if not matches:
                console.print("No matching offer yet: it stays in the book until it expires "
                              f"({relative(expires, now)}). Check with `buyer requests` / `buyer deals`.")
            for match in matches:
                line = (f"  matched offer {match.offer_hash[:12]}…: {match.gpu_count} GPUs × {match.deal_hours} h at "
                        f"{tok.fmt(int(match.price_per_gpu_hour))}/GPU-h: {match.state}")
                if match.deal_id is not None:
                    line += f", deal [bold]{match.deal_id}[/bold] (watch it: `buyer watch {match.deal_id}`)"
                if match.error:
                    line += f" ({match.error})"
                console.print(line)

        s.emit(data, render)

    # ───────────────────────────── deals ─────────────────────────────

    @cli.command("watch", help=_doc("""
        Follow one deal live (status, timeline, payouts, events) until it reaches a final state:
        settled, refunded, aborted or resolved.

        \b
        Examples:
          ape run buyer watch 12
          ape run buyer watch 12 --timeout 600 --json     # JSON lines, one per change
        """))
    @click.argument("deal_id", type=int)
    @click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
                  help="Seconds between polls.")
    @click.option("--timeout", type=click.FloatRange(0), default=0, show_default=True,
                  help="Give up after this many seconds (0: never).")
    @session_options
    def watch(s: Session, deal_id: int, interval: float, timeout: float) -> None:
        _require_deal(s, deal_id)
        window = s.gateway.read("ComputeMarket", "challengeWindow")
        tokens = TokenCache(s)
        deadline = time.monotonic() + timeout if timeout else None
        last_key = None

        def fetch() -> DealDetailOut | None:
            try:
                return s.api.deal(deal_id)
            except NotFound:
                return None  # on chain, not indexed yet

        def finished(deal: DealDetailOut | None) -> bool:
            return deal is not None and deal.status in TERMINAL_DEAL_STATUSES

        def timed_out() -> bool:
            return deadline is not None and time.monotonic() > deadline

        if s.as_json:
            while True:
                deal = fetch()
                if deal is not None:
                    key = (deal.status, (deal.on_chain or {}).get("status"), len(deal.events))
                    if key != last_key:
                        last_key = key
                        click.echo(json.dumps(deal_json(deal, tokens(deal.token))))
                if finished(deal):
                    return
                if timed_out():
                    raise MarketError(f"deal {deal_id} is still {deal.status if deal else 'unindexed'} after "
                                      f"{timeout:g}s; run `buyer watch {deal_id}` again later")
                time.sleep(interval)

        deal = fetch()
        with Live(_deal_view(deal, deal_id, tokens, s.now(), window), console=s.console, refresh_per_second=4,
                  transient=False) as live:
            while not finished(deal):
                if timed_out():
                    break
                time.sleep(interval)
                deal = fetch()
                live.update(_deal_view(deal, deal_id, tokens, s.now(), window))
        if not finished(deal):
            raise MarketError(f"deal {deal_id} is still {deal.status if deal else 'unindexed'} after {timeout:g}s; "
                              f"run `buyer watch {deal_id}` again later")

    def _party_action(name: str, fn_name: str, help_text: str, *, allowed: set[str], after: str) -> None:
        @cli.command(name, help=_doc(help_text))
        @click.argument("deal_id", type=int)
        @session_options
        def action(s: Session, deal_id: int) -> None:
            chain_deal = _require_deal(s, deal_id)
            status = DealStatus(chain_deal["status"]).name.lower()
            if chain_deal["buyer"].lower() != s.address.lower() and name != "refund":
                raise InvalidInput(f"deal {deal_id} is {chain_deal['buyer']}'s, not yours ({s.address})", field="deal_id")
            if status not in allowed:
                raise InvalidInput(f"deal {deal_id} is {status}; `buyer {name}` needs it {' or '.join(sorted(allowed))}",
                                   field="deal_id")
            sent = s.wallet.send(getattr(s.gateway.market.functions, fn_name)(deal_id), action=f"{fn_name}({deal_id})")
            now_status = DealStatus(s.gateway.get_deal(deal_id)["status"]).name.lower()
            s.emit({"deal_id": deal_id, "status": now_status, "tx": sent.tx_hash},
                   lambda c: c.print(f"Deal {deal_id} is now [bold]{now_status}[/bold]. {after}"))

    _party_action("accept", "accept", """
        Accept a completed deal's result now (pays the provider without waiting for the challenge window).

        \b
        Example:
          ape run buyer accept 12
        """, allowed={"completed", "disputed"}, after="")
    _party_action("dispute", "dispute", """
        Dispute a completed deal within its challenge window (or a running deal the provider
        abandoned): payment stays in escrow until the arbiter resolves it.

        \b
        Example:
          ape run buyer dispute 12
        """, allowed={"completed", "running"}, after="The arbiter will resolve it; follow with `buyer watch`.")
    _party_action("abort", "abort", """
        Stop a running deal early: the provider is paid for the time elapsed, the rest is refunded
        to your vault, and the provider's agent stops the job.

        \b
        Example:
          ape run buyer abort 12
        """, allowed={"running"}, after="Unused escrow is back in your vault.")
    _party_action("refund", "claimRefund", """
        Claim the refund of a deal the provider never started (after its start deadline); the
        provider's collateral compensates you. The service's keeper usually does this for you.

        \b
        Example:
          ape run buyer refund 12
        """, allowed={"open"}, after="Escrow is back in your vault; the slashed collateral went to your wallet.")

    return cli


# ───────────────────────────── helpers ─────────────────────────────


def _indexed(s: Session, deal_id: int) -> bool:
    try:
        s.api.deal(deal_id, live=False)
        return True
    except NotFound:
        return False


def _require_deal(s: Session, deal_id: int) -> dict[str, Any]:
    if deal_id <= 0:
        raise NotFound(f"deal ids start at 1, got {deal_id}")
    deal = s.gateway.get_deal(deal_id)
    if deal["status"] == DealStatus.NONE:
        raise NotFound(f"there is no deal {deal_id} on chain {s.chain_id}: see `buyer deals` for yours")
    return deal


def _permit_domain(s: Session, tok: Token) -> dict[str, Any] | None:
    """The token's EIP-712 domain if it implements EIP-2612 (nonces) and ERC-5267 (eip712Domain)."""
    try:
        _fields, name, version, chain_id, verifying, _salt, _ext = tok.contract.functions.eip712Domain().call()
        tok.contract.functions.nonces(s.address).call()
    except Exception:  # noqa: BLE001 - no permit support: fall back to approve
        return None
    return {"name": name, "version": version, "chainId": chain_id, "verifyingContract": verifying}


def _permit_typed_data(domain: dict[str, Any], owner: str, spender: str, value: int, nonce: int,
                       deadline: int) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                       {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
                       {"name": "deadline", "type": "uint256"}],
        },
        "primaryType": "Permit",
        "domain": domain,
        "message": {"owner": owner, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline},
    }


def _deal_view(deal: DealDetailOut | None, deal_id: int, tokens: TokenCache, now: int, window: int) -> Any:
    if deal is None:
        return Panel(f"deal {deal_id} is on chain; waiting for the service to index it…", title=f"deal {deal_id}")
    tok = tokens(deal.token)
    chain_status = (deal.on_chain or {}).get("status", deal.status)
    style = STATUS_STYLE.get(chain_status, "white")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("status", f"[{style}]{chain_status}[/{style}]"
                  + (f" (indexed: {deal.status})" if chain_status != deal.status else ""))
    table.add_row("provider", deal.provider)
    table.add_row("compute", f"{deal.gpu_count} GPU × {deal.deal_hours} h at {tok.fmt(int(deal.price_per_gpu_hour))}/GPU-h")
    table.add_row("escrow", f"{tok.fmt(int(deal.escrow))} (provider collateral {tok.fmt(int(deal.collateral))})")
    table.add_row("job spec", deal.job_spec_hash)
    if deal.started_at is None:
        table.add_row("start deadline", f"{iso_time(deal.start_deadline)} ({relative(deal.start_deadline, now)})")
    else:
        table.add_row("started", f"{iso_time(deal.started_at)} ({relative(deal.started_at, now)})")
    if deal.completed_at:
        table.add_row("completed", f"{iso_time(deal.completed_at)} — used {human_seconds(deal.used_seconds or 0)}")
        table.add_row("result", deal.result_hash or "-")
        if chain_status == "completed":
            ends = deal.completed_at + window
            table.add_row("challenge window", f"ends {relative(ends, now)} — `buyer dispute {deal_id}` before, "
                                              f"or `buyer accept {deal_id}`")
    if deal.status in TERMINAL_DEAL_STATUSES:
        table.add_row("provider paid", tok.fmt(int(deal.provider_paid)))
        table.add_row("refunded to you", tok.fmt(int(deal.buyer_refund)))
        table.add_row("protocol fee", tok.fmt(int(deal.fee)))
        if int(deal.collateral_slashed):
            table.add_row("collateral to you", tok.fmt(int(deal.collateral_slashed)))
    events = Table(title="events", title_justify="left", box=None)
    events.add_column("block", justify="right")
    events.add_column("event")
    events.add_column("tx")
    for event in deal.events[-8:]:
        events.add_row(str(event.block_number), event.name, short(event.tx_hash))
    return Panel(Group(table, events), title=f"deal {deal_id}", subtitle=short(deal.buyer))


cli = make_cli()

if __name__ == "__main__":
    cli(prog_name="buyer")
