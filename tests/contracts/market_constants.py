"""Parameters the contract fixtures deploy with, shared by the contract tests."""

USDC = 10**6  # one whole mUSDC (6 decimals)
HOUR = 3600
DAY = 24 * HOUR
CHALLENGE_WINDOW = HOUR
FEE_BPS = 100
COLLATERAL_BPS = 2000
EPOCH_LENGTH = 7 * DAY
GPU_H100 = 8  # "H100 80GB" in marketplace.matching.catalog
REGION_EU_NORTH = 1

