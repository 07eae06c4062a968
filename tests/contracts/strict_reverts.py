"""A strict `reverts`: like `ape.reverts`, but it really checks the custom error and its inputs.

Ape checks a custom error only when it decoded it; it does not decode a revert raised by another
contract underneath (ProviderStaking under ComputeMarket), nor, under the ape-test provider,
revert data that holds a 0x27 byte, and such a revert then satisfies any expectation.
"""

from __future__ import annotations

from ast import literal_eval
from contextlib import contextmanager

import ape
from ape.exceptions import CustomError
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak


def selector(error) -> bytes:
    return keccak(text=error.abi.selector)[:4]


def encoded(error, *values) -> bytes:
    """The revert data `error(values)` produces: what DealOpenFailed carries as its reason."""
    return selector(error) + abi_encode([i.type for i in error.abi.inputs], list(values))


def _norm(value):
    value = getattr(value, "address", value)
    return value.lower() if isinstance(value, str) else value


def revert_data(raised) -> bytes:
    """The raw revert data of an error Ape could not decode. The ape-test provider leaves it as
    `0x…` hex, or as a stringified bytes literal when the data holds a quote byte (0x27)."""
    message = str(raised.revert_message)
    if message.startswith(("b'", 'b"')):
        return literal_eval(message)
    return bytes.fromhex(message.removeprefix("0x"))


@contextmanager
def reverts(error, **inputs):
    """`ape.reverts(error, **inputs)`, made strict.

    Ape checks a custom error only when it decoded it, and it does not decode a revert raised by
    another contract underneath (ProviderStaking under ComputeMarket), nor — under the ape-test
    provider — revert data that contains a 0x27 byte; such a revert satisfies any expectation.
    It also skips input names the error does not have. Here the revert must be `error`, with every
    named input present and equal, whatever Ape made of it; `info.inputs` holds all decoded inputs.
    """
    names = [i.name for i in error.abi.inputs]
    assert set(inputs) <= set(names), f"{error.abi.name} has no input(s) {sorted(set(inputs) - set(names))}"
    with ape.reverts(error, **inputs) as info:
        yield info
    raised = info.value
    if isinstance(raised, CustomError):
        assert raised.abi.selector == error.abi.selector, f"expected {error.abi.name}, got {raised.abi.name}"
        info.inputs = dict(raised.inputs)
        return
    data = revert_data(raised)
    assert data[:4] == selector(error), f"expected {error.abi.name}, got revert data 0x{data.hex()}"
    info.inputs = dict(zip(names, abi_decode([i.type for i in error.abi.inputs], data[4:]), strict=True))
    for name, expected in inputs.items():
        assert _norm(info.inputs[name]) == _norm(expected), f"{name}: expected {expected}, got {info.inputs[name]}"
