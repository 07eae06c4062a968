"""User input parsing, revert decoding and help texts of the CLIs (no chain needed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from eth_abi import encode
from eth_utils import keccak

from marketplace.chain.wallet import RevertDecoder
from marketplace.cli import buyer as buyer_cli
from marketplace.cli import provider as provider_cli
from marketplace.cli.common import (
    build_job_spec,
    format_amount,
    parse_amount,
    parse_duration,
    parse_when,
    resolve_gpu,
    resolve_regions,
)
from marketplace.errors import InvalidInput
from marketplace.orderbook import job_spec_hash


@pytest.mark.parametrize(("text", "decimals", "units"), [
    ("2.50", 6, 2_500_000), ("2", 18, 2 * 10**18), (".5", 6, 500_000), ("1_000", 6, 1_000_000_000),
    ("0.000001", 6, 1), ("2.500000", 6, 2_500_000),
])
def test_parse_amount__whole_tokens__exact_base_units(text, decimals, units):
    assert parse_amount(text, decimals) == units


@pytest.mark.parametrize(("text", "fragment"), [
    ("2.5000001", "has 7 decimals but mUSDC has only 6"), ("-1", "must not be negative"), ("1e3", "plain decimal"),
    ("abc", "plain decimal"), ("0", "more than zero"), ("", "plain decimal"), ("0.0000001", "has 7 decimals"),
])
def test_parse_amount__bad_text__invalid_input_names_the_problem(text, fragment):
    with pytest.raises(InvalidInput, match=fragment.replace("(", r"\(")):
        parse_amount(text, 6, what="price", symbol="mUSDC")


@pytest.mark.parametrize(("units", "decimals", "text"), [
    (2_500_000, 6, "2.50 mUSDC"), (4125, 6, "0.004125 mUSDC"), (10**18, 18, "1.00 mUSDC"), (0, 6, "0.00 mUSDC"),
    (123_456_789, 6, "123.456789 mUSDC"),
])
def test_format_amount__base_units__at_least_two_decimals(units, decimals, text):
    assert format_amount(units, decimals, "mUSDC") == text


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d12h", 129_600),
                                               ("1w", 604_800), ("45", 45)])
def test_parse_duration__units__seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "-1h", "0s", "h"])
def test_parse_duration__junk__invalid_input(text):
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_parse_when__duration_iso_or_unix__relative_to_chain_time():
    now = 1_800_000_000
    assert parse_when("2h", now, what="--start-by") == now + 7200
    assert parse_when("@1800003600", now, what="--start-by") == 1_800_003_600
    assert parse_when("2027-01-15T12:00:00", now, what="--start-by") == 1_800_014_400
    with pytest.raises(InvalidInput, match="not in the future"):
        parse_when("@1700000000", now, what="--start-by")


def test_resolve_gpu__names_ids_and_any():
    assert resolve_gpu("H100 80GB").id == resolve_gpu("h100-80gb").id == resolve_gpu("8").id == 8
    assert resolve_gpu("any", allow_any=True) is None
    with pytest.raises(InvalidInput, match=r"unknown GPU model 'H900'; choose one of: RTX 4090 \(1\)"):
        resolve_gpu("H900")
    with pytest.raises(InvalidInput):
        resolve_gpu("any")  # an offer sells a concrete model


def test_resolve_regions__names_ids_and_continents():
    assert resolve_regions(("europe",)) == [5, 6, 7]
    assert resolve_regions(("us-west,eu-north", "0")) == [0, 1, 7]
    with pytest.raises(InvalidInput, match="unknown region 'mars'"):
        resolve_regions(("mars",))


def test_build_job_spec__catalogue_defaults_made_explicit__hash_pins_every_parameter():
    spec = build_job_spec("train-logreg", ("seed=7",), None)
    assert spec == {"type": "train-logreg", "seed": 7, "samples": 2000, "features": 16, "epochs": 200}
    assert build_job_spec(None, (), '{"type": "train-logreg", "seed": 7}') == spec
    assert job_spec_hash(spec) != job_spec_hash(build_job_spec("train-logreg", ("seed=8",), None))
    assert build_job_spec("hash-chain", ("seed=abc", "iterations=10"), None) == {
        "type": "hash-chain", "seed": "abc", "iterations": 10}


@pytest.mark.parametrize(("job", "params", "fragment"), [
    ("train-logreg", ("lr=0.1",), "has no parameter 'lr'"), ("train-logreg", ("epochs=0",), "must be in [1, 100000]"),
    ("train-logreg", ("seed",), "must be name=value"), ("nope", (), "unknown job type 'nope'"),
    (None, (), "a request pays for a job"),
])
def test_build_job_spec__bad_job__invalid_input(job, params, fragment):
    with pytest.raises(InvalidInput) as error:
        build_job_spec(job, params, None)
    assert fragment in error.value.message


def test_revert_decoder__custom_error_string_and_panic__one_readable_line():
    abi = [{"type": "error", "name": "ComputeMarketInsufficientBalance", "inputs": [
        {"name": "account", "type": "address"}, {"name": "token", "type": "address"},
        {"name": "available", "type": "uint256"}, {"name": "needed", "type": "uint256"}]}]
    decoder = RevertDecoder({"ComputeMarket": abi})
    selector = keccak(text="ComputeMarketInsufficientBalance(address,address,uint256,uint256)")[:4]
    account = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    name, args, text = decoder.decode(selector + encode(["address", "address", "uint256", "uint256"],
                                                        [account, account, 3, 5]))
    assert name == "ComputeMarketInsufficientBalance" and args["needed"] == 5 and args["account"] == account
    assert text == f"ComputeMarketInsufficientBalance(account={account}, token={account}, available=3, needed=5)"
    assert decoder.decode(bytes.fromhex("08c379a0") + encode(["string"], ["nope"]))[2] == "nope"
    assert decoder.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))[2] == "panic: arithmetic overflow or underflow"
    assert "unknown error data 0xdeadbeef" in decoder.decode(bytes.fromhex("deadbeef"))[2]


@pytest.mark.parametrize("group", [provider_cli.cli, buyer_cli.cli], ids=["provider", "buyer"])
def test_help__every_command__has_examples(group):
    runner = CliRunner()
    assert runner.invoke(group, ["--help"]).exit_code == 0
    for name in group.commands:
        result = runner.invoke(group, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name
        assert "--json" in result.output and "--account" in result.output, name
