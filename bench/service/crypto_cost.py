"""In-process cost of checking one signed order, without HTTP, DB or chain: what the service's
`OrderBookService.submit` does before it touches anything else.

    python bench/service/crypto_cost.py ORDERS.json          # prints one JSON line

ORDERS.json: {"chain_id": ..., "market": ..., "orders": [[side, message, signature], ...]}.
The ECDSA backend is eth_keys' (ECC_BACKEND_CLASS=eth_keys.backends.NativeECCBackend selects the
pure-Python one; the default is coincurve when installed), so the caller runs this once per
backend in a fresh process.
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

    started = time.perf_counter()
    cpu = time.process_time()
    wrong = 0
    for order, sig in parsed:  # what submit() calls: encode_typed_data + Account.recover_message
        owner = order.provider if isinstance(order, Offer) else order.trainer
        wrong += order.recover(sig, chain_id, market) != owner
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
