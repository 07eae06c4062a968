"""Buyer CLI: `ape run buyer --help`. Thin: the commands live in marketplace.cli.buyer; this
script only lets them use Ape's accounts (test accounts and `ape accounts` keyfiles).

    ape run buyer deposit 100 --account 3
    ape run buyer request --gpu "H100 80GB" --count 2 --max-price 3 --hours 4 --job train-logreg
    ape run buyer watch 1
"""

from marketplace.cli.ape_accounts import ape_account_loader
from marketplace.cli.buyer import make_cli

cli = make_cli(account_loader=ape_account_loader)
