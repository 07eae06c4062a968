"""EIP-712 orders and attestations, hashed exactly as ComputeMarket hashes them.

The field order and types below are the contract's (contracts/interfaces/IComputeMarket.sol);
tests/contracts/test_eip712_parity.py checks the hashes and signatures against the deployed
contract, so a drift on either side fails the build.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "ComputeMarket"
DOMAIN_VERSION = "1"


class SettlementRule(IntEnum):
    """Mirror of IComputeMarket.SettlementRule."""

    CHALLENGE_WINDOW = 0
    BUYER_ACCEPTANCE = 1
    ATTESTATION = 2


class DealStatus(IntEnum):
    """Mirror of IComputeMarket.DealStatus."""

    NONE = 0
    OPEN = 1
    RUNNING = 2
    COMPLETED = 3
    DISPUTED = 4
    SETTLED = 5
    REFUNDED = 6
    ABORTED = 7
    RESOLVED = 8

    @property
    def is_terminal(self) -> bool:
        return self >= DealStatus.SETTLED


@dataclass(frozen=True)
class _Typed:
    """Shared EIP-712 plumbing for the order structs: subclasses list (name, solidity type)."""

    TYPE_NAME: ClassVar[str]
    TYPES: ClassVar[tuple[tuple[str, str], ...]]

    @classmethod
    def type_string(cls) -> str:
        return f"{cls.TYPE_NAME}(" + ",".join(f"{t} {n}" for n, t in cls.TYPES) + ")"

    @classmethod
    def typehash(cls) -> bytes:
        return keccak(text=cls.type_string())

    def as_tuple(self) -> tuple[Any, ...]:
        """Positional values in the contract's field order, for contract calls."""
        return astuple(self)

    def message(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def struct_hash(self) -> bytes:
        """hashStruct(): keccak(typehash ‖ encodeData); dynamic `string` fields enter as their keccak."""
        types, values = [], []
        for (_, solidity_type), value in zip(self.TYPES, self.as_tuple(), strict=True):
            if solidity_type == "string":
                types.append("bytes32")
                values.append(keccak(text=value))
            else:
                types.append(solidity_type)
                values.append(bytes.fromhex(value[2:]) if solidity_type == "bytes32" and isinstance(value, str) else value)
        return keccak(abi_encode(["bytes32", *types], [self.typehash(), *values]))

    def typed_data(self, chain_id: int, verifying_contract: str) -> dict[str, Any]:
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                self.TYPE_NAME: [{"name": n, "type": t} for n, t in self.TYPES],
            },
            "primaryType": self.TYPE_NAME,
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(verifying_contract),
            },
            "message": self.message(),
        }

    def digest(self, chain_id: int, verifying_contract: str) -> bytes:
        signable = encode_typed_data(full_message=self.typed_data(chain_id, verifying_contract))
        # EIP-191 version 0x01: keccak(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)
        return keccak(b"\x19" + signable.version + signable.header + signable.body)

    def sign(self, private_key: bytes | str, chain_id: int, verifying_contract: str) -> bytes:
        signable = encode_typed_data(full_message=self.typed_data(chain_id, verifying_contract))
        return bytes(Account.sign_message(signable, private_key).signature)

    def recover(self, signature: bytes, chain_id: int, verifying_contract: str) -> str:
        signable = encode_typed_data(full_message=self.typed_data(chain_id, verifying_contract))
        return Account.recover_message(signable, signature=signature)


@dataclass(frozen=True)
class Offer(_Typed):
    provider: str
    gpuModel: int
    gpuCount: int
    vramGb: int
    region: int
    greenEnergy: bool
    token: str
    pricePerGpuHour: int
    minHours: int
    maxHours: int
    capacityGpuHours: int
    availableUntil: int
    expiry: int
    salt: int
    counter: int = 0

    TYPE_NAME: ClassVar[str] = "Offer"
    TYPES: ClassVar[tuple[tuple[str, str], ...]] = (
        ("provider", "address"), ("gpuModel", "uint16"), ("gpuCount", "uint16"), ("vramGb", "uint16"),
        ("region", "uint8"), ("greenEnergy", "bool"), ("token", "address"), ("pricePerGpuHour", "uint96"),
        ("minHours", "uint32"), ("maxHours", "uint32"), ("capacityGpuHours", "uint32"),
        ("availableUntil", "uint64"), ("expiry", "uint64"), ("salt", "uint256"), ("counter", "uint256"),
    )


@dataclass(frozen=True)
class Request(_Typed):
    trainer: str
    gpuModel: int
    gpuCount: int
    minVramGb: int
    regionMask: int
    greenOnly: bool
    token: str
    maxPricePerGpuHour: int
    totalHours: int
    minHours: int
    startBy: int
    expiry: int
    jobSpecHash: str
    settlementRule: int
    salt: int
    counter: int = 0

    TYPE_NAME: ClassVar[str] = "Request"
    TYPES: ClassVar[tuple[tuple[str, str], ...]] = (
        ("trainer", "address"), ("gpuModel", "uint16"), ("gpuCount", "uint16"), ("minVramGb", "uint16"),
        ("regionMask", "uint256"), ("greenOnly", "bool"), ("token", "address"),
        ("maxPricePerGpuHour", "uint96"), ("totalHours", "uint32"), ("minHours", "uint32"),
        ("startBy", "uint64"), ("expiry", "uint64"), ("jobSpecHash", "bytes32"), ("settlementRule", "uint8"),
        ("salt", "uint256"), ("counter", "uint256"),
    )


@dataclass(frozen=True)
class Attestation(_Typed):
    """A verifier's verdict on a completed deal's result."""

    dealId: int
    resultHash: str
    passed: bool

    TYPE_NAME: ClassVar[str] = "Attestation"
    TYPES: ClassVar[tuple[tuple[str, str], ...]] = (
        ("dealId", "uint256"), ("resultHash", "bytes32"), ("passed", "bool"),
    )


@dataclass(frozen=True)
class CancelOrder(_Typed):
    """An owner's off-chain request that the service stop matching one of their orders.
    Not a contract type: on chain, cancel with cancelOffer/cancelRequest or incrementCounter."""

    orderHash: str

    TYPE_NAME: ClassVar[str] = "CancelOrder"
    TYPES: ClassVar[tuple[tuple[str, str], ...]] = (("orderHash", "bytes32"),)


@dataclass(frozen=True)
class ProviderProfile(_Typed):
    """A provider's signed registration with the service (off-chain metadata)."""

    provider: str
    name: str
    endpoint: str

    TYPE_NAME: ClassVar[str] = "ProviderProfile"
    TYPES: ClassVar[tuple[tuple[str, str], ...]] = (("provider", "address"), ("name", "string"), ("endpoint", "string"))


def region_mask(*regions: int) -> int:
    """Bitmask allowing the given region ids (0..255)."""
    mask = 0
    for region in regions:
        if not 0 <= region <= 255:
            raise ValueError(f"region id {region} is outside 0..255")
        mask |= 1 << region
    return mask
