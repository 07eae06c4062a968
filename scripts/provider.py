"""Provider CLI: `ape run provider --help`. Thin: the commands live in marketplace.cli.provider;
this script only lets them use Ape's accounts (test accounts and `ape accounts` keyfiles).

    ape run provider stake 500 --account 2
    ape run provider offer --gpu "H100 80GB" --count 8 --region us-west --price 2.50
    ape run provider serve --account my-key
"""

from marketplace.cli.ape_accounts import ape_account_loader
from marketplace.cli.provider import make_cli

cli = make_cli(account_loader=ape_account_loader)
