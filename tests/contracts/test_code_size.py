"""EIP-170: every deployable contract's runtime code fits the 24,576-byte limit of real chains.

Ape's in-process chain and a default anvil do not enforce the limit, so the compiled artifacts
are measured directly; one anvil started with --code-size-limit (as the Devnet always is) then
shows the node really enforces it and ComputeMarket deploys under it.

Reproduce the numbers: `ape test tests/contracts/test_code_size.py -q -s` prints the table.
"""

from __future__ import annotations

import pytest
from eth_utils import to_hex
from web3 import Web3

EIP170_LIMIT = 24_576
CORE = ("ComputeMarket", "ProviderStaking", "RewardPool", "ComputeCredit", "MockStablecoin")


def runtime_sizes(project) -> dict[str, int]:
    """Runtime bytecode size in bytes of every compiled contract under contracts/ that has code
    (interfaces have none)."""
    sizes = {}
    for name in sorted(project.contracts.keys()):
        contract_type = project.contracts[name]
        code = contract_type.runtime_bytecode.bytecode if contract_type.runtime_bytecode else None
        if code and code not in ("0x", ""):
            sizes[name] = len(bytes.fromhex(code.removeprefix("0x")))
    return sizes


def test_runtime_bytecode__every_contract__fits_eip170(project):
    sizes = runtime_sizes(project)

    print("\nruntime bytecode (EIP-170 limit 24,576 bytes):")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"  {name:<24} {size:>6,} bytes  {size / EIP170_LIMIT:6.1%}  headroom {EIP170_LIMIT - size:>6,}")

    assert set(CORE) <= set(sizes), f"missing artifacts: {set(CORE) - set(sizes)}"
    too_big = {name: size for name, size in sizes.items() if size > EIP170_LIMIT}
    assert not too_big, f"over the EIP-170 limit: {too_big}"


def test_runtime_bytecode__compute_market__is_the_real_runtime_code(project):
    """Guard against measuring the wrong thing: the runtime code is a proper suffix of the
    creation code's payload and much larger than a stub."""
    contract_type = project.ComputeMarket.contract_type
    runtime = contract_type.runtime_bytecode.bytecode.removeprefix("0x")
    creation = contract_type.deployment_bytecode.bytecode.removeprefix("0x")
    assert len(runtime) // 2 > 10_000
    assert len(creation) > len(runtime)


# ───────────────────────────── a node that enforces the limit ─────────────────────────────


def _deploy(w3: Web3, sender: str, init_code: str) -> dict:
    tx_hash = w3.eth.send_transaction({"from": sender, "data": init_code, "gas": 30_000_000})
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def _returning_zeros(size: int) -> str:
    """Init code that deploys `size` zero bytes: PUSH2 size, PUSH1 0, RETURN."""
    assert size < 2**16
    return "0x61" + size.to_bytes(2, "big").hex() + "6000f3"


@pytest.mark.anvil
def test_anvil_with_code_size_limit__deploys_compute_market_and_rejects_oversized_code(project, make_anvil):
    devnet = make_anvil()  # Devnet always passes --code-size-limit 24576
    w3 = Web3(Web3.HTTPProvider(devnet.url))
    sender = w3.eth.accounts[0]

    # The node enforces the limit: exactly 24,576 bytes deploy, one more byte does not.
    at_limit = _deploy(w3, sender, _returning_zeros(EIP170_LIMIT))
    assert at_limit.status == 1
    assert len(w3.eth.get_code(at_limit.contractAddress)) == EIP170_LIMIT
    over_limit = _deploy(w3, sender, _returning_zeros(EIP170_LIMIT + 1))
    assert over_limit.status == 0

    # ComputeMarket deploys there (constructor: admin, treasury, staking, rewardPool, window, fee, collateral).
    contract_type = project.ComputeMarket.contract_type
    abi = [item.model_dump(mode="json", by_alias=True) for item in contract_type.abi]
    factory = w3.eth.contract(abi=abi, bytecode=contract_type.deployment_bytecode.bytecode)
    placeholder = w3.eth.accounts[1]  # any non-zero address stands in for staking and rewards here
    tx_hash = factory.constructor(sender, sender, placeholder, placeholder, 3600, 100, 2000).transact(
        {"from": sender, "gas": 30_000_000}
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt.status == 1
    deployed = w3.eth.get_code(receipt.contractAddress)
    expected = contract_type.runtime_bytecode.bytecode.removeprefix("0x")
    assert len(deployed) == len(expected) // 2 <= EIP170_LIMIT
    market = w3.eth.contract(address=receipt.contractAddress, abi=abi)
    assert market.functions.challengeWindow().call() == 3600
    assert to_hex(deployed)[:10] == "0x" + expected[:8]
