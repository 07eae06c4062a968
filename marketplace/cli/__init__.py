"""Command-line tools for the marketplace's two sides, and the provider agent.

    marketplace.cli.provider  `provider` click group: register, stake, offer, serve (the agent), earnings
    marketplace.cli.buyer     `buyer` click group: deposit, request a job, watch, accept / dispute
    marketplace.cli.agent     ProviderAgent: runs the jobs a provider sold, restart-safe
    marketplace.cli.common    options, sessions (API client + chain wallet), parsing, output, errors

`scripts/provider.py` and `scripts/buyer.py` expose the groups as `ape run provider …` and
`ape run buyer …`, with Ape accounts (`marketplace.cli.ape_accounts`); without Ape they also run
as `python -m marketplace.cli.provider …` / `python -m marketplace.cli.buyer …`.
"""
