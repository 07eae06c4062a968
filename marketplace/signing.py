"""EIP-712 orders and attestations, hashed exactly as ComputeMarket hashes them.

The field order and types below are the contract's (contracts/interfaces/IComputeMarket.sol);
tests/contracts/test_eip712_parity.py checks the hashes and signatures against the deployed
contract, so a drift on either side fails the build.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache, lru_cache
from typing import Any, ClassVar

from Crypto.Hash import keccak as _pycryptodome_keccak
from coincurve import PublicKey
from eth_account import Account
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "ComputeMarket"
DOMAIN_VERSION = "1"
_DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _keccak256(data: bytes) -> bytes:
    # pycryptodome directly, the backend eth-utils' keccak reaches through two wrappers: a third of
    # the cost of the three hashes every order needs.
    return _pycryptodome_keccak.new(digest_bits=256, data=data).digest()


class SignatureError(ValueError):
    """A signature that cannot belong to anyone: wrong length, bad v, high s, or no curve point."""


@cache
def domain_separator(chain_id: int, verifying_contract: str) -> bytes:
    """EIP-712 domain separator of ComputeMarket at `verifying_contract` on `chain_id` (OpenZeppelin EIP712)."""
    return keccak(
        _DOMAIN_TYPEHASH + keccak(text=DOMAIN_NAME) + keccak(text=DOMAIN_VERSION) + chain_id.to_bytes(32, "big")
        + bytes(12) + bytes.fromhex(verifying_contract.removeprefix("0x"))
    )


def recover_digest(digest: bytes, signature: bytes) -> str:
    """The checksummed address whose key signed `digest`, under the rules of OpenZeppelin's ECDSA:
    65 bytes r ‖ s ‖ v with v 27/28 (0/1 accepted) and s in the lower half of the curve order,
    so a malleable twin the contract would refuse is refused here too."""
    if len(signature) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(signature)}")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise SignatureError(f"signature v must be 27 or 28, got {signature[64]}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_N // 2:
        raise SignatureError("signature r or s is out of range (s must be in the lower half of the curve order)")
    try:
        public_key = PublicKey.from_signature_and_message(signature[:64] + bytes([v]), digest, hasher=None)
    except ValueError:
        raise SignatureError("signature does not recover to any public key") from None
    return checksum_address("0x" + _keccak256(public_key.format(compressed=False)[1:])[-20:].hex())


@lru_cache(maxsize=1 << 16)
def checksum_address(value: str) -> str:
    """EIP-55 form of a 0x-prefixed hex address (ValueError if it is not one). Cached: the same
    owners and tokens come back with every order, and each checksum costs a keccak."""
    return to_checksum_address(value)


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
        return _typehash(cls)

    def as_tuple(self) -> tuple[Any, ...]:
        """Positional values in the contract's field order, for contract calls."""
        return tuple(getattr(self, name) for name, _ in self.TYPES)

    def message(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in self.TYPES}

    def struct_hash(self) -> bytes:
        """hashStruct(): keccak(typehash ‖ encodeData). Every field is one 32-byte word (the types
        here are all static, and a `string` enters as its keccak), so the words are built directly:
        eth-abi's generic encoder made this most of an order's EIP-712 cost. Parity with eth-account
        and the contract is tested (tests/service/test_signing_types.py, tests/contracts)."""
        cached = self.__dict__.get("_struct_hash")  # frozen: computed once per message
        if cached is None:
            words = [_typehash(type(self))]
            for name, solidity_type in self.TYPES:
                words.append(_WORD_ENCODERS[solidity_type](name, getattr(self, name)))
            cached = self.__dict__["_struct_hash"] = _keccak256(b"".join(words))
        return cached

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
        # EIP-191 version 0x01: keccak(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)
        return _keccak256(b"\x19\x01" + domain_separator(chain_id, verifying_contract) + self.struct_hash())

    def sign(self, private_key: bytes | str, chain_id: int, verifying_contract: str) -> bytes:
        return bytes(Account.unsafe_sign_hash(self.digest(chain_id, verifying_contract), private_key).signature)

    def recover(self, signature: bytes, chain_id: int, verifying_contract: str) -> str:
        """The signer's address; SignatureError for a signature the contract would refuse as malformed."""
        return recover_digest(self.digest(chain_id, verifying_contract), signature)


@cache
def _typehash(cls: type[_Typed]) -> bytes:
    return keccak(text=cls.type_string())


def _uint_word(name: str, value: int) -> bytes:
    try:
        return value.to_bytes(32, "big")
    except (OverflowError, AttributeError):
        raise ValueError(f"{name} must be an integer in 0..2^256-1, got {value!r}") from None


def _bool_word(name: str, value: bool) -> bytes:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return (1 if value else 0).to_bytes(32, "big")


def _address_word(name: str, value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{name} must be a 20-byte address, got {value!r}")
    return bytes(12) + raw


def _bytes32_word(name: str, value: str | bytes) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {value!r}")
    return raw


def _string_word(_name: str, value: str) -> bytes:
    return keccak(text=value)


# uintN values are range-checked where orders are parsed (orderbook.parse_typed); encoding only
# guarantees one word each, as the contract's abi.encode does.
_WORD_ENCODERS = {
    "uint8": _uint_word, "uint16": _uint_word, "uint32": _uint_word, "uint64": _uint_word, "uint96": _uint_word,
    "uint256": _uint_word, "bool": _bool_word, "address": _address_word, "bytes32": _bytes32_word,
    "string": _string_word,
}


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
