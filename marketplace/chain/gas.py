"""The gas limit to send with a transaction, from the gas a simulation of it used or the node's estimate."""

from __future__ import annotations

# An estimate is exact only for the block it was simulated on. The block that mines the
# transaction can take a dearer path: a second more of deal time makes abort/complete call the
# reward pool (fresh storage slots, ~70k gas) where 0 s skipped it; a new reward epoch does the
# same to settlement. Unused gas is not charged, so the margin costs nothing but block space.
GAS_HEADROOM = 1.25
GAS_MARGIN = 120_000


def gas_limit(estimate: int) -> int:
    return int(estimate * GAS_HEADROOM) + GAS_MARGIN
