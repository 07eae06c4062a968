"""In-process cost of checking one signed order, without HTTP, DB or chain: what the service's
`OrderBookService.submit` does before it touches anything else.

    python bench/service/crypto_cost.py ORDERS.json          # prints one JSON line

ORDERS.json: {"chain_id": ..., "market": ..., "orders": [[side, message, signature], ...]}.
Measured: parsing; eth-account's generic `encode_typed_data` (what the service used before, for
reference); and hash + recover as `submit` does it (struct words by hand, coincurve). With
ECC_BACKEND_CLASS=eth_keys.backends.NativeECCBackend the recover step uses eth_keys' pure-Python
secp256k1 on the same digest instead, so the caller runs this once per backend in a fresh process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))


def main(path: str) -> None:
    from eth_account.messages import encode_typed_data
    from eth_keys import keys
    from eth_keys.backends import get_backend

    from marketplace.orderbook import parse_signature, parse_typed
    from marketplace.signing import Offer, Request

    data = json.loads(Path(path).read_text())
    chain_id, market = data["chain_id"], data["market"]
    orders = [(Offer if side == "offer" else Request, message, signature) for side, message, signature in data["orders"]]

    # Warm-up (imports, caches), not timed.
    cls, message, signature = orders[0]
    parse_typed(cls, message).recover(parse_signature(signature), chain_id, market)

    parsed = []
    started = time.perf_counter()
    cpu = time.process_time()
    for cls, message, signature in orders:
        parsed.append((parse_typed(cls, message), parse_signature(signature)))
    parse_s, parse_cpu = time.perf_counter() - started, time.process_time() - cpu

    started = time.perf_counter()
    cpu = time.process_time()
    for order, _ in parsed:
        encode_typed_data(full_message=order.typed_data(chain_id, market))
    encode_s, encode_cpu = time.perf_counter() - started, time.process_time() - cpu

    backend = get_backend()
    native = type(backend).__name__ == "NativeECCBackend"
    started = time.perf_counter()
    cpu = time.process_time()
    wrong = 0
    for order, sig in parsed:
        owner = order.provider if isinstance(order, Offer) else order.trainer
        if native:  # the same digest, recovered by eth_keys' pure-Python secp256k1
            v = sig[64] - 27 if sig[64] >= 27 else sig[64]
            signature = keys.Signature(vrs=(v, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")),
                                       backend=backend)
            signer = signature.recover_public_key_from_msg_hash(order.digest(chain_id, market)).to_checksum_address()
        else:  # what submit() calls: struct words by hand, keccak, coincurve
            signer = order.recover(sig, chain_id, market)
        wrong += signer != owner
    recover_s, recover_cpu = time.perf_counter() - started, time.process_time() - cpu
    if wrong:
        raise SystemExit(f"{wrong} signatures did not recover to their owner")

    n = len(parsed)
    print(json.dumps({
        "backend": type(get_backend()).__name__, "orders": n,
        "parse_us": parse_s / n * 1e6, "parse_cpu_us": parse_cpu / n * 1e6,
        "encode_us": encode_s / n * 1e6, "encode_cpu_us": encode_cpu / n * 1e6,
        "encode_recover_us": recover_s / n * 1e6, "encode_recover_cpu_us": recover_cpu / n * 1e6,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
