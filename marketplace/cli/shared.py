"""Commands both sides have: status, faucet (devnet), vault withdraw, deals, cancel."""

from __future__ import annotations

import inspect
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from marketplace.api.schemas import DealOut, OrderOut
from marketplace.cli.common import (
    Session,
    Token,
    gpu_name,
    human_seconds,
    is_local_chain,
    relative,
    session_options,
    short,
    token_option,
)
from marketplace.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from marketplace.orderbook import parse_typed
from marketplace.signing import CancelOrder, DealStatus, Offer, Request

def _doc(text: str, **values: str) -> str:
    """A command's help text with {placeholders} filled (examples name the right script)."""
    return inspect.cleandoc(text).format(**values)


DEAL_STATUSES = [s.name.lower() for s in DealStatus if s != DealStatus.NONE]


# ───────────────────────────── helpers ─────────────────────────────


class TokenCache:
    """Token metadata by address, looked up once per command."""

    def __init__(self, session: Session):
        self.session = session
        self._tokens: dict[str, Token] = {}

    def __call__(self, address: str) -> Token:
        key = address.lower()
        if key not in self._tokens:
            self._tokens[key] = self.session.token(address)
        return self._tokens[key]


def contract_tuple(order: Offer | Request) -> tuple:
    return tuple(bytes.fromhex(v[2:]) if t == "bytes32" else v
                 for (_, t), v in zip(order.TYPES, order.as_tuple(), strict=True))


def deal_json(deal: DealOut, token: Token) -> dict[str, Any]:
    data = deal.model_dump(mode="json")
    data["token_symbol"] = token.symbol
    data["token_decimals"] = token.decimals
    return data


def deals_table(deals: list[DealOut], tokens: TokenCache, now: int, *, side: str) -> Table:
    other = "buyer" if side == "provider" else "provider"
    table = Table(title=f"Deals ({len(deals)})", title_justify="left")
    for column, justify in (("deal", "right"), ("status", "left"), (other, "left"), ("GPUs × h", "right"),
                            ("price/GPU-h", "right"), ("escrow", "right"), ("timeline", "left"), ("used", "right"),
                            ("provider paid", "right")):
        table.add_column(column, justify=justify, no_wrap=column != "timeline")
    for deal in deals:
        token = tokens(deal.token)
        if deal.status == "open":
            timeline = f"start by {relative(deal.start_deadline, now)}"
        elif deal.status == "running":
            timeline = f"started {relative(deal.started_at, now)}"
        elif deal.completed_at:
            timeline = f"completed {relative(deal.completed_at, now)}"
        else:
            timeline = "-"
        table.add_row(
            str(deal.deal_id), deal.status, short(getattr(deal, other)), f"{deal.gpu_count} × {deal.deal_hours}",
            token.fmt(int(deal.price_per_gpu_hour)), token.fmt(int(deal.escrow)), timeline,
            human_seconds(deal.used_seconds) if deal.used_seconds is not None else "-",
            token.fmt(int(deal.provider_paid)) if deal.status in ("settled", "aborted", "resolved") else "-",
        )
    return table


def orders_table(orders: list[OrderOut], tokens: TokenCache, now: int, *, side: str) -> Table:
    table = Table(title=f"{'Offers' if side == 'offer' else 'Requests'} ({len(orders)})", title_justify="left")
    for column in ("hash", "status", "GPU", "count", "price/GPU-h", "hours", "filled", "expires"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("count", "filled") else "left")
    for order in orders:
        token = tokens(order.token)
        message = order.order
        if side == "offer":
            count, hours = message["gpuCount"], f"{message['minHours']}–{message['maxHours']}"
            filled = f"{order.filled}/{order.capacity} GPU-h"
        else:
            count, hours = message["gpuCount"], f"{message['totalHours']} (min {message['minHours']})"
            filled = f"{order.filled}/{order.capacity} h"
        table.add_row(short(order.hash, 12), order.status.value, gpu_name(order.gpu_model), str(count),
                      token.fmt(int(order.price)), hours, filled, relative(order.expiry, now))
    return table


def _own_order(s: Session, text: str) -> OrderOut:
    """An order by its full hash, or by a unique prefix among your own orders (as tables show them)."""
    text = text.strip().lower().split("…")[0]
    if len(text) == 66:
        return s.api.order(text)
    if len(text) < 8 or not text.startswith("0x"):
        raise InvalidInput(f"{text!r} is not an order hash (0x + 64 hex digits, or a unique prefix of yours)",
                           field="order_hash")
    found = [o for o in s.api.orders(owner=s.address, limit=200).items if o.hash.startswith(text)]
    if len(found) != 1:
        raise (NotFound if not found else InvalidInput)(
            f"{'no' if not found else 'more than one'} order of yours starts with {text}")
    return found[0]


# ───────────────────────────── commands ─────────────────────────────


def add_shared_commands(group: click.Group, *, side: str) -> None:
    """side: 'provider' (orders are offers) or 'buyer' (orders are requests)."""
    order_side = "offer" if side == "provider" else "request"
    example = f"ape run {side}"

    @group.command("status", help=_doc("""Your account: ETH for gas, token wallet and market vault balances
        (and stake, for providers).

        \b
        Example:
          {example} status --account 2
        """, example=example, orders=order_side + "s"))
    @token_option
    @session_options
    def status(s: Session, token: str | None) -> None:
        tok = s.settlement_token(token)
        address = s.address
        eth = s.gateway.w3.eth.get_balance(address)
        wallet_balance = tok.contract.functions.balanceOf(address).call()
        vault = s.gateway.vault_balance(address, tok.address)
        data: dict[str, Any] = {"address": address, "chain_id": s.chain_id, "token": tok.address, "symbol": tok.symbol,
                                "eth_wei": eth, "wallet": wallet_balance, "vault": vault}
        if side == "provider":
            staked, locked, pending, available_at = s.gateway.read("ProviderStaking", "positionOf", address, tok.address)
            data["stake"] = {"staked": staked, "locked": locked, "free": staked - locked, "pending": pending,
                             "available_at": available_at}

        def render(console: Console) -> None:
            table = Table(title=f"{side} {address} on chain {s.chain_id}", title_justify="left", show_header=False)
            table.add_column(style="bold")
            table.add_column()
            table.add_row("gas (ETH)", f"{eth / 10**18:.4f}")
            table.add_row(f"wallet {tok.symbol}", tok.fmt(wallet_balance))
            table.add_row(f"market vault {tok.symbol}", tok.fmt(vault))
            if side == "provider":
                stake = data["stake"]
                table.add_row("stake: free / locked", f"{tok.fmt(stake['free'])} / {tok.fmt(stake['locked'])}")
                if pending:
                    table.add_row("unstaking", f"{tok.fmt(pending)} available {relative(available_at, s.now())}")
            console.print(table)

        s.emit(data, render)

    @group.command("faucet", help=_doc("""Mint test tokens to your wallet (devnet mock stablecoins only).

        \b
        Example:
          {example} faucet 1000
        """, example=example, orders=order_side + "s"))
    @click.argument("amount")
    @token_option
    @session_options
    def faucet(s: Session, amount: str, token: str | None) -> None:
        tok = s.token(token)
        if not is_local_chain(s.chain_id):
            raise InvalidInput(f"the faucet is for local devnets; on chain {s.chain_id} get {tok.symbol} elsewhere",
                               field="token")
        units = tok.parse(amount)
        if not any(item.get("name") == "mint" for item in tok.contract.abi):
            raise InvalidInput(f"{tok.symbol} has no faucet", field="token")
        s.wallet.send(tok.contract.functions.mint(s.address, units), action=f"mint {tok.fmt(units)}")
        balance = tok.contract.functions.balanceOf(s.address).call()
        s.emit({"minted": units, "wallet": balance, "token": tok.address},
               lambda c: c.print(f"Minted {tok.fmt(units)}; wallet holds {tok.fmt(balance)}."))


    @group.command("withdraw", help=_doc("""Move tokens from your market vault back to your wallet (default: everything).

        \b
        Examples:
          {example} withdraw            # the whole vault balance
          {example} withdraw 12.5
        """, example=example, orders=order_side + "s"))
    @click.argument("amount", required=False)
    @token_option
    @session_options
    def withdraw(s: Session, amount: str | None, token: str | None) -> None:
        tok = s.token(token)
        available = s.gateway.vault_balance(s.address, tok.address)
        units = tok.parse(amount) if amount is not None else available
        if units == 0:
            raise InsufficientFunds(f"your market vault holds no {tok.symbol}: nothing to withdraw")
        if units > available:
            raise InsufficientFunds(f"your market vault holds {tok.fmt(available)}; cannot withdraw {tok.fmt(units)}")
        sent = s.wallet.send(s.gateway.market.functions.withdraw(tok.address, units), action=f"withdraw {tok.fmt(units)}")
        vault = s.gateway.vault_balance(s.address, tok.address)
        wallet_balance = tok.contract.functions.balanceOf(s.address).call()
        s.emit({"withdrawn": units, "vault": vault, "wallet": wallet_balance, "tx": sent.tx_hash},
               lambda c: c.print(f"Withdrew {tok.fmt(units)}: wallet {tok.fmt(wallet_balance)}, vault {tok.fmt(vault)}."))


    @group.command("deals", help=_doc("""Your deals as the service indexed them from the chain.

        \b
        Examples:
          {example} deals
          {example} deals --status running --json
        """, example=example, orders=order_side + "s"))
    @click.option("--status", "status_filter", type=click.Choice(DEAL_STATUSES), default=None, help="Only this status.")
    @click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
    @session_options
    def deals(s: Session, status_filter: str | None, limit: int) -> None:
        filters = {side: s.address}
        page = s.api.deals(**filters, status=status_filter, limit=limit)
        tokens = TokenCache(s)
        s.emit({"total": page.total, "items": [deal_json(d, tokens(d.token)) for d in page.items]},
               lambda c: c.print(deals_table(page.items, tokens, s.now(), side=side)))


    @group.command(order_side + "s", help=_doc("""Your {orders} at the service (default: open ones).

        \b
        Examples:
          {example} {orders}
          {example} {orders} --status all --json
        """, example=example, orders=order_side + "s"))
    @click.option("--status", "status_filter", type=click.Choice(["open", "filled", "cancelled", "expired", "all"]),
                  default="open", show_default=True)
    @session_options
    def orders(s: Session, status_filter: str) -> None:
        page = s.api.orders(side=order_side, owner=s.address, status=None if status_filter == "all" else status_filter,
                            limit=200)
        tokens = TokenCache(s)
        s.emit({"total": page.total, "items": [o.model_dump(mode="json") for o in page.items]},
               lambda c: c.print(orders_table(page.items, tokens, s.now(), side=order_side)))

    @group.command("cancel", help=_doc("""Cancel one of your {orders} (signed, off chain: the service stops matching
        it), or all of them.

        \b
        Examples:
          {example} cancel 0x3f9a1c7be0d4     # one order (hash, or a prefix), signed CancelOrder to the service
          {example} cancel 0x3f9a1c7be0d4 --on-chain  # …and cancelled in the contract too
          {example} cancel --all              # every order you signed so far (on-chain counter)
        """, example=example, orders=order_side + "s"))
    @click.argument("order_hash", required=False)
    @click.option("--all", "cancel_all", is_flag=True,
                  help="Invalidate ALL your open orders on chain (incrementCounter), and withdraw them from the service.")
    @click.option("--on-chain", is_flag=True, help="Also cancel this one order on chain, for good (a transaction).")
    @session_options
    def cancel(s: Session, order_hash: str | None, cancel_all: bool, on_chain: bool) -> None:
        if bool(order_hash) == cancel_all:
            raise InvalidInput("give one order hash, or --all", field="order_hash")
        if cancel_all:
            open_orders = s.api.orders(owner=s.address, status="open", limit=200).items
            sent = s.wallet.send(s.gateway.market.functions.incrementCounter(), action="incrementCounter")
            counter = s.gateway.counter_of(s.address)
            withdrawn = []
            for order in open_orders:
                # The service's indexer also drops orders under an old counter; a signed cancel
                # makes it immediate (and Conflict just means the indexer was first).
                try:
                    s.api.cancel(order.hash, s.wallet.sign_order(CancelOrder(orderHash=order.hash)))
                except Conflict:
                    pass
                if s.api.order(order.hash).status.value == "cancelled":
                    withdrawn.append(order.hash)
            s.emit({"counter": counter, "tx": sent.tx_hash, "withdrawn_from_service": withdrawn},
                   lambda c: c.print(f"All orders signed before are void on chain (counter now {counter}); "
                                     f"{len(withdrawn)} open order(s) withdrawn from the service."))
            return
        order = _own_order(s, order_hash)
        if order.owner.lower() != s.address.lower():
            raise InvalidInput(f"order {order.hash} belongs to {order.owner}, not to {s.address}", field="order_hash")
        tx_hash = None
        if on_chain:
            typed = parse_typed(Offer if order.side.value == "offer" else Request, order.order)
            fn = (s.gateway.market.functions.cancelOffer if isinstance(typed, Offer)
                  else s.gateway.market.functions.cancelRequest)
            tx_hash = s.wallet.send(fn(contract_tuple(typed)), action="cancel on chain").tx_hash
        elif order.status.value != "open":
            raise Conflict(f"order {order.hash} is already {order.status.value}")
        result = s.api.order(order.hash) if on_chain else order
        if result.status.value == "open":
            try:
                result = s.api.cancel(order.hash, s.wallet.sign_order(CancelOrder(orderHash=order.hash)))
            except Conflict:  # the indexer saw the on-chain cancel first
                result = s.api.order(order.hash)
        s.emit({"hash": result.hash, "status": result.status.value, "tx": tx_hash},
               lambda c: c.print(f"Order {result.hash} is {result.status.value}"
                                 + (" and cancelled on chain." if tx_hash else ".")))

