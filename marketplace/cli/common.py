"""What the provider and buyer CLIs share: options, the session (service client, chain, wallet),
accounts, parsing of user input (amounts, durations, GPU models, regions, job specs), output
(rich tables or `--json`) and the mapping of every expected failure to one line and an exit code.

Amounts are typed by people in whole tokens ("2.50") and converted with the token's decimals;
more decimals than the token has is an error, never a silent rounding. Times are relative to
the chain's clock (block timestamps), since that is what the contracts judge deadlines by.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any

import click
import requests
from eth_account import Account
from eth_account.messages import SignableMessage
from eth_utils import is_hex_address, to_checksum_address
from rich.console import Console

from marketplace.chain.gateway import ChainGateway, ChainUnavailable
from marketplace.chain.wallet import KeySigner, Signer, Wallet
from marketplace.client import DEFAULT_URL, MarketClient
from marketplace.devnet import rpc_chain_id
from marketplace.errors import InvalidInput, MarketError, ServiceUnavailable
from marketplace.jobs import MAX_ITERATIONS, MAX_SAMPLES, JobSpecError
from marketplace.matching.catalog import ANY_GPU_MODEL, GPU_MODELS, REGIONS, GpuModel
from marketplace.registry import Registry, RegistryError

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
LOCAL_CHAIN_IDS = {31337, 1337}
TEST_MNEMONIC = "test test test test test test test test test test test junk"
TEST_HD_PATH = "m/44'/60'/0'/0/{}"
# Default accounts on a local devnet, matching the devnet roles (0 deployer, 1 treasury, 4 matcher).
DEFAULT_TEST_ACCOUNT = {"provider": 2, "buyer": 3}
TERMINAL_DEAL_STATUSES = {"settled", "refunded", "aborted", "resolved"}

Account.enable_unaudited_hdwallet_features()


# ───────────────────────────── errors ─────────────────────────────


class CliError(click.ClickException):
    """One line on stderr and a chosen exit code (click prints it, no traceback)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the message held
        self.exit_code = exit_code


def to_cli_error(exc: BaseException, *, rpc_url: str | None = None) -> CliError | None:
    """The one-line form of an expected failure, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, click.NoSuchOption) and re.fullmatch(r"-\d[\d._]*", exc.option_name or ""):
        return CliError(f"{exc.option_name} is negative: amounts, counts and ids must be positive", 2)
    if isinstance(exc, click.UsageError):
        where = f"`{exc.ctx.command_path} --help`" if exc.ctx is not None else "--help"
        return CliError(f"{exc.format_message()} (see {where})", 2)
    if isinstance(exc, MarketError):
        return CliError(exc.message, exc.exit_code)
    if isinstance(exc, JobSpecError):
        return CliError(f"job spec: {exc}", InvalidInput.exit_code)
    if isinstance(exc, RegistryError):
        return CliError(f"{exc} (or point MARKET_REGISTRY / --registry at the deployment registry)",
                        ServiceUnavailable.exit_code)
    if isinstance(exc, (ChainUnavailable, requests.ConnectionError, requests.Timeout, ConnectionError)):
        return CliError(_node_down(rpc_url), ServiceUnavailable.exit_code)
    return None


def _node_down(rpc_url: str | None) -> str:
    return (f"no chain node answers at {rpc_url or 'the RPC URL'}: start the devnet with `make devnet` "
            "(and `make deploy`), or pass --rpc-url / set MARKET_RPC_URL")


class MarketGroup(click.Group):
    """A click group whose commands fail with one line: known errors become CliError."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, or re-raised untouched
            session = ctx.find_object(App)
            error = to_cli_error(exc, rpc_url=session.last_rpc_url if session else None)
            if error is None or os.environ.get("MARKET_DEBUG"):
                raise
            raise error from None


# ───────────────────────────── accounts ─────────────────────────────


AccountLoader = Callable[[str | None, int, str], Signer]
"""(the --account value or None, chain id, role "provider"/"buyer") → a Signer."""


def is_local_chain(chain_id: int) -> bool:
    return chain_id in LOCAL_CHAIN_IDS


def test_account_key(index: int, mnemonic: str | None = None) -> bytes:
    """Private key of test account `index` of the devnet mnemonic (anvil's and Ape's default)."""
    mnemonic = mnemonic or os.environ.get("MARKET_TEST_MNEMONIC") or TEST_MNEMONIC
    return bytes(Account.from_mnemonic(mnemonic, account_path=TEST_HD_PATH.format(index)).key)


def default_account_index(role: str, chain_id: int) -> int:
    if not is_local_chain(chain_id):
        raise InvalidInput(f"--account is required on chain {chain_id} (test accounts are for local devnets only)",
                           field="account")
    return DEFAULT_TEST_ACCOUNT[role]


def parse_test_index(spec: str) -> int | None:
    """`2`, `TEST::2` or `test:2` name test account 2."""
    match = re.fullmatch(r"(?:test::?)?(\d+)", spec.strip(), flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


class KeyfileSigner:
    """An encrypted JSON keyfile (Ape's `ape accounts generate/import` format, i.e. eth-account's):
    the address is read without the passphrase; the key is decrypted on the first signature with
    the passphrase from APE_ACCOUNTS_<alias>_PASSPHRASE, MARKET_KEYFILE_PASSWORD or a prompt."""

    def __init__(self, path: Path, alias: str):
        self.path = path
        self.alias = alias
        try:
            self._keyfile = json.loads(path.read_text())
            self._address = to_checksum_address(self._keyfile["address"])
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInput(f"cannot read keyfile {path}: {exc}", field="account") from None
        self._signer: KeySigner | None = None

    @property
    def address(self) -> str:
        return self._address

    def _unlocked(self) -> KeySigner:
        if self._signer is None:
            password = (os.environ.get(f"APE_ACCOUNTS_{self.alias}_PASSPHRASE")
                        or os.environ.get("MARKET_KEYFILE_PASSWORD"))
            if password is None:
                password = click.prompt(f"Passphrase to unlock '{self.alias}'", hide_input=True, err=True)
            try:
                self._signer = KeySigner(Account.decrypt(self._keyfile, password))
            except ValueError:
                raise InvalidInput(f"wrong passphrase for account '{self.alias}'", field="account") from None
        return self._signer

    def sign_message(self, message: SignableMessage) -> bytes:
        return self._unlocked().sign_message(message)

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        return self._unlocked().sign_transaction(tx)


def ape_data_folder() -> Path:
    return Path(os.environ.get("APE_DATA_FOLDER") or Path.home() / ".ape")


def default_account_loader(spec: str | None, chain_id: int, role: str) -> Signer:
    """Accounts without Ape: a test account index (local devnets), an Ape keyfile alias, a keyfile
    path, or MARKET_PRIVATE_KEY from the environment when no --account is given."""
    if spec is None and os.environ.get("MARKET_PRIVATE_KEY"):
        return KeySigner(os.environ["MARKET_PRIVATE_KEY"])
    index = default_account_index(role, chain_id) if spec is None else parse_test_index(spec)
    if index is not None:
        if not is_local_chain(chain_id):
            raise InvalidInput(f"test account {index} is only for local devnets, not chain {chain_id}", field="account")
        return KeySigner(test_account_key(index))
    path = Path(spec).expanduser()
    if not path.is_file():
        path = ape_data_folder() / "accounts" / f"{spec}.json"
    if not path.is_file():
        raise InvalidInput(f"no account '{spec}': give a test account index (e.g. 2), an `ape accounts` alias "
                           "or a keyfile path", field="account")
    return KeyfileSigner(path, path.stem)


# ───────────────────────────── user input ─────────────────────────────


def parse_amount(text: str | int | Decimal, decimals: int, *, what: str = "amount", symbol: str = "",
                 allow_zero: bool = False) -> int:
    """'2.50' whole tokens → base units; refuses more decimals than the token has, negatives, junk."""
    raw = str(text).strip().replace("_", "")
    if raw.startswith("-"):
        raise InvalidInput(f"{what} must not be negative, got {text!r}", field=what)
    if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", raw):
        raise InvalidInput(f"{what} must be a plain decimal number of tokens like 2.50, got {text!r}", field=what)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(f"{what} must be a decimal number, got {text!r}", field=what) from None
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        places = len(raw.split(".", 1)[1]) if "." in raw else 0
        raise InvalidInput(
            f"{what} {raw} has {places} decimals but {symbol or 'the token'} has only {decimals}: "
            f"round it to at most {decimals} decimal places", field=what)
    units = int(scaled)
    if units == 0 and not allow_zero:
        raise InvalidInput(f"{what} must be more than zero", field=what)
    return units


def format_amount(units: int, decimals: int, symbol: str | None = None) -> str:
    """Base units → '2.50 mUSDC' (at least two decimals, no trailing zeros beyond)."""
    text = format(Decimal(int(units)).scaleb(-decimals), "f")
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(2, "0")
        text = f"{whole}.{frac}"
    elif decimals:
        text += ".00"
    return f"{text} {symbol}" if symbol else text


_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)?", re.IGNORECASE)
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, None: 1}


def parse_duration(text: str, *, what: str = "duration") -> int:
    """'90s', '30m', '2h', '1d12h', '1w', or plain seconds → seconds (> 0)."""
    raw = str(text).strip().lower().replace(" ", "")
    if not raw or not re.fullmatch(r"(\d+(w|d|h|m|s)?)+", raw):
        raise InvalidInput(f"{what} must look like 90s, 30m, 2h, 1d or 1w, got {text!r}", field=what)
    seconds = sum(int(n) * _UNIT_SECONDS[u or None] for n, u in _DURATION.findall(raw))
    if seconds <= 0:
        raise InvalidInput(f"{what} must be positive, got {text!r}", field=what)
    return seconds


def parse_when(text: str, now: int, *, what: str) -> int:
    """A moment: a duration from now on the chain's clock ('2h'), an ISO time, or '@<unix seconds>'."""
    raw = str(text).strip()
    if raw.startswith("@") and raw[1:].isdigit():
        moment = int(raw[1:])
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", raw):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(f"{what}: {text!r} is not an ISO date/time", field=what) from None
        moment = int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())
    else:
        moment = now + parse_duration(raw, what=what)
    if moment <= now:
        raise InvalidInput(f"{what} {text!r} is not in the future (chain time {iso_time(now)})", field=what)
    return moment


def positive_int(value: int | None, what: str, *, minimum: int = 1, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    if value < minimum:
        raise InvalidInput(f"{what} must be at least {minimum}, got {value}", field=what.lstrip("-").replace("-", "_"))
    if maximum is not None and value > maximum:
        raise InvalidInput(f"{what} must be at most {maximum}, got {value}", field=what.lstrip("-").replace("-", "_"))
    return value


def resolve_gpu(text: str, *, allow_any: bool = False) -> GpuModel | None:
    """A GPU model by catalogue name ('H100 80GB', case-insensitive) or id; None for 'any'."""
    raw = str(text).strip()
    if allow_any and raw.lower() in {"any", "0"}:
        return None
    if raw.isdigit() and int(raw) in GPU_MODELS:
        return GPU_MODELS[int(raw)]
    wanted = re.sub(r"[\s_-]+", " ", raw.lower())
    for model in GPU_MODELS.values():
        if model.name.lower() == wanted or model.name.lower().replace(" ", "") == wanted.replace(" ", ""):
            return model
    names = ", ".join(f"{m.name} ({m.id})" for m in GPU_MODELS.values())
    extra = " or any" if allow_any else ""
    raise InvalidInput(f"unknown GPU model {text!r}; choose one of: {names}{extra}", field="gpu")


def resolve_region(text: str) -> int:
    raw = str(text).strip().lower()
    if raw.isdigit() and int(raw) in REGIONS:
        return int(raw)
    for region in REGIONS.values():
        if region.name == raw:
            return region.id
    names = ", ".join(r.name for r in REGIONS.values())
    raise InvalidInput(f"unknown region {text!r}; choose one of: {names}", field="region")


def resolve_regions(values: tuple[str, ...]) -> list[int]:
    """Region names/ids, or continent names (north-america, europe, …) for all their regions."""
    ids: list[int] = []
    continents = {r.continent for r in REGIONS.values()}
    for value in values:
        for part in str(value).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part in {"any", "all"}:
                ids.extend(REGIONS)
            elif part in continents:
                ids.extend(r.id for r in REGIONS.values() if r.continent == part)
            else:
                ids.append(resolve_region(part))
    return sorted(set(ids))


def gpu_name(model_id: int) -> str:
    if model_id == ANY_GPU_MODEL:
        return "any"
    model = GPU_MODELS.get(model_id)
    return model.name if model else f"#{model_id}"


def region_name(region_id: int) -> str:
    region = REGIONS.get(region_id)
    return region.name if region else f"#{region_id}"


# The job catalogue's parameters (marketplace.jobs): name → (kind, min, max, default).
JOB_PARAMS: dict[str, dict[str, tuple[type, int | None, int | None, Any]]] = {
    "hash-chain": {"seed": (str, None, None, ""), "iterations": (int, 1, MAX_ITERATIONS, 100_000)},
    "train-logreg": {"seed": (int, 0, 2**32 - 1, 0), "samples": (int, 10, MAX_SAMPLES, 2000),
                     "features": (int, 1, 512, 16), "epochs": (int, 1, 100_000, 200)},
}


def build_job_spec(job_type: str | None, params: tuple[str, ...], spec_text: str | None) -> dict[str, Any]:
    """A complete job spec (every parameter explicit, so its hash pins the whole workload)."""
    if spec_text:
        if job_type or params:
            raise InvalidInput("give either --job-spec or --job with --job-param, not both", field="job")
        source = Path(spec_text[1:]).read_text() if spec_text.startswith("@") else spec_text
        try:
            spec = json.loads(source)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--job-spec is not valid JSON: {exc}", field="job_spec") from None
        if not isinstance(spec, dict):
            raise InvalidInput("--job-spec must be a JSON object", field="job_spec")
        job_type = spec.get("type")
        params = tuple(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in spec.items() if k != "type")
    if not job_type:
        raise InvalidInput(f"a request pays for a job: add --job ({' | '.join(JOB_PARAMS)}) and --job-param name=value",
                           field="job")
    catalogue = JOB_PARAMS.get(job_type)
    if catalogue is None:
        raise InvalidInput(f"unknown job type {job_type!r}; the catalogue has: {', '.join(JOB_PARAMS)}", field="job")
    spec: dict[str, Any] = {"type": job_type, **{k: v[3] for k, v in catalogue.items()}}
    for item in params:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput(f"--job-param must be name=value, got {item!r}", field="job_param")
        if name not in catalogue:
            raise InvalidInput(f"job {job_type} has no parameter {name!r}; it takes: {', '.join(catalogue)}",
                               field="job_param")
        kind, lo, hi, _ = catalogue[name]
        if kind is int:
            try:
                number = int(value.strip())
            except ValueError:
                raise InvalidInput(f"job parameter {name} must be a whole number, got {value!r}", field="job_param") from None
            if not lo <= number <= hi:
                raise InvalidInput(f"job parameter {name} must be in [{lo}, {hi}], got {number}", field="job_param")
            spec[name] = number
        else:
            spec[name] = value
    return spec


# ───────────────────────────── time ─────────────────────────────


def iso_time(timestamp: int | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(timestamp: int | None, now: int) -> str:
    """'in 2h 5m' / '3m 10s ago' on the chain's clock."""
    if not timestamp:
        return "-"
    delta = int(timestamp) - now
    text = human_seconds(abs(delta))
    return f"in {text}" if delta > 0 else ("now" if delta == 0 else f"{text} ago")


def human_seconds(seconds: int) -> str:
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return " ".join(parts[:2])


def short(value: str | None, keep: int = 10) -> str:
    if not value:
        return "-"
    return value if len(value) <= keep + 6 else f"{value[:keep]}…{value[-4:]}"


# ───────────────────────────── tokens ─────────────────────────────


@dataclass(frozen=True)
class Token:
    address: str
    symbol: str
    decimals: int
    contract: Any = field(repr=False, compare=False)
    registry_name: str | None = None

    def fmt(self, units: int) -> str:
        return format_amount(units, self.decimals, self.symbol)

    def parse(self, text: str, *, what: str = "amount", allow_zero: bool = False) -> int:
        return parse_amount(text, self.decimals, what=what, symbol=self.symbol, allow_zero=allow_zero)


# ───────────────────────────── the session ─────────────────────────────


@dataclass
class App:
    """Per-invocation settings of a CLI group: which side it is and how accounts load."""

    role: str
    account_loader: AccountLoader = default_account_loader
    last_rpc_url: str | None = None


class Session:
    """One command's connections: the service (API), the chain (gateway) and the user's wallet.
    Everything is opened lazily, so a command touches only what it needs."""

    def __init__(self, app: App, *, account: str | None, api_url: str, rpc_url: str, registry: str | None,
                 as_json: bool):
        self.app = app
        self.account_spec = account
        self.api_url = api_url
        self.rpc_url = rpc_url
        self.registry_path = registry
        self.as_json = as_json
        app.last_rpc_url = rpc_url
        interactive = sys.stdout.isatty()
        self.console = Console(width=None if interactive else 140, highlight=False)
        self.err = Console(stderr=True, width=None if sys.stderr.isatty() else 140, highlight=False)

    # ───────────── connections ─────────────

    @cached_property
    def api(self) -> MarketClient:
        return MarketClient(self.api_url)

    @cached_property
    def gateway(self) -> ChainGateway:
        registry = Registry.load(self.registry_path)
        if rpc_chain_id(self.rpc_url, timeout=3.0) is None:  # one quick probe instead of the gateway's retries
            raise ServiceUnavailable(_node_down(self.rpc_url))
        gateway = ChainGateway(self.rpc_url, registry, timeout=10.0)
        try:
            chain_id = gateway.chain_id
        except ChainUnavailable:
            raise ServiceUnavailable(_node_down(self.rpc_url)) from None
        if not registry.deployments(chain_id):
            raise ServiceUnavailable(
                f"the registry {registry.path} has no contracts for chain {chain_id} (the node at {self.rpc_url}): "
                "deploy with `make deploy` or point --registry / MARKET_REGISTRY at the right file")
        return gateway

    @property
    def chain_id(self) -> int:
        return self.gateway.chain_id

    @cached_property
    def signer(self) -> Signer:
        return self.app.account_loader(self.account_spec, self.chain_id, self.app.role)

    @property
    def address(self) -> str:
        return to_checksum_address(self.signer.address)

    @cached_property
    def wallet(self) -> Wallet:
        return Wallet(self.gateway, self.signer, on_sent=self._announce_tx, waiting=self.waiting)

    def _announce_tx(self, action: str, tx_hash: str) -> None:
        if not self.as_json:
            self.err.print(f"[dim]→ {action}: sent {tx_hash}[/dim]")

    def now(self) -> int:
        return self.gateway.timestamp()

    # ───────────── tokens ─────────────

    def token(self, spec: str | None = None) -> Token:
        """A settlement token by address, registry name (MockUSDC) or symbol (mUSDC, USDC); default
        MARKET_TOKEN, else the devnet's MockUSDC."""
        spec = spec or os.environ.get("MARKET_TOKEN")
        deployed = self.gateway.registry.deployments(self.chain_id)
        if spec is None:
            if "MockUSDC" not in deployed:
                raise InvalidInput("no default settlement token on this chain: pass --token <address or symbol>",
                                   field="token")
            spec = "MockUSDC"
        return self._token(spec, deployed)

    def reward_token(self) -> Token:
        address = self.gateway.read("RewardPool", "rewardToken")
        return self._token(address, self.gateway.registry.deployments(self.chain_id))

    def _token(self, spec: str, deployed: dict[str, Any]) -> Token:
        if is_hex_address(spec):
            address, name = to_checksum_address(spec), None
            for registry_name, deployment in deployed.items():
                if deployment.address.lower() == address.lower():
                    name = registry_name
        else:
            name = next((n for n in deployed if n.lower() == spec.lower()), None)
            if name is None:
                wanted = spec.lower().removeprefix("m")
                for registry_name in deployed:
                    if registry_name in {"ComputeMarket", "ProviderStaking", "RewardPool"}:
                        continue
                    symbol = self._symbol(deployed[registry_name].address)
                    if symbol and (symbol.lower() == spec.lower() or symbol.lower().removeprefix("m") == wanted):
                        name = registry_name
                        break
            if name is None:
                raise InvalidInput(f"unknown token {spec!r}: give its address or a deployed token's symbol", field="token")
            address = to_checksum_address(deployed[name].address)
        contract = self.gateway.token_contract(address)
        try:
            symbol = self.gateway._call(lambda: contract.functions.symbol().call())
            decimals = self.gateway._call(lambda: contract.functions.decimals().call())
        except (ChainUnavailable, requests.ConnectionError):
            raise
        except Exception:  # noqa: BLE001 - not an ERC-20 at that address
            raise InvalidInput(f"{address} is not an ERC-20 token on chain {self.chain_id}", field="token") from None
        return Token(address, symbol, decimals, contract, name)

    def _symbol(self, address: str) -> str | None:
        try:
            contract = self.gateway.token_contract(address)
            return self.gateway._call(lambda: contract.functions.symbol().call())
        except Exception:  # noqa: BLE001
            return None

    def settlement_token(self, spec: str | None) -> Token:
        token = self.token(spec)
        if not self.gateway.is_settlement_token(token.address):
            raise InvalidInput(f"{token.symbol} ({token.address}) is not a settlement token of this market",
                               field="token")
        return token

    # ───────────── output ─────────────

    def emit(self, data: Any, render: Callable[[Console], None] | None = None) -> None:
        """`--json`: the data as JSON on stdout; otherwise the rich rendering."""
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=_json_default))
        elif render is not None:
            render(self.console)

    def note(self, text: str) -> None:
        """A progress/info line on stderr (kept out of --json stdout)."""
        if not self.as_json:
            self.err.print(text)

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """A spinner on stderr while something waits (silent in --json mode and off a terminal)."""
        if self.as_json or not self.err.is_terminal:
            yield
            return
        with self.err.status(text):
            yield

    def close(self) -> None:
        if "api" in self.__dict__:
            self.api.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


# ───────────────────────────── options ─────────────────────────────


def session_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --account/--api-url/--rpc-url/--registry/--json to a command and passes a Session."""

    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
    @click.option("--registry", envvar="MARKET_REGISTRY", default=None, metavar="PATH",
                  help="Deployment registry file [env MARKET_REGISTRY; default deployments/registry.json].")
    @click.option("--rpc-url", envvar="MARKET_RPC_URL", default=DEFAULT_RPC_URL, show_default=True,
                  help="Chain node JSON-RPC URL [env MARKET_RPC_URL].")
    @click.option("--api-url", envvar="MARKET_API_URL", default=DEFAULT_URL, show_default=True,
                  help="Marketplace service URL [env MARKET_API_URL].")
    @click.option("--account", envvar="MARKET_ACCOUNT", default=None, metavar="ALIAS|INDEX",
                  help="Ape account alias or keyfile, or a devnet test account index [env MARKET_ACCOUNT; "
                       "default on a local devnet: test account 2 (provider) / 3 (buyer)].")
    @functools.wraps(func)
    def wrapper(*args: Any, account: str | None, api_url: str, rpc_url: str, registry: str | None, as_json: bool,
                **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        app = ctx.find_object(App) or App(role="buyer")
        session = Session(app, account=account, api_url=api_url, rpc_url=rpc_url, registry=registry, as_json=as_json)
        try:
            return func(session, *args, **kwargs)
        finally:
            session.close()

    return wrapper


def token_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--token", default=None, metavar="SYMBOL|ADDRESS",
                        help="Settlement token [env MARKET_TOKEN; default the devnet's mUSDC].")(func)


def make_group(name: str, role: str, help_text: str, account_loader: AccountLoader | None) -> click.Group:
    @click.group(name=name, cls=MarketGroup, help=help_text,
                 context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = App(role=role, account_loader=account_loader or default_account_loader)

    return group

