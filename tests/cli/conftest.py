"""One anvil, one deployment (challenge window 60 s, 1 h reward epochs) and one running
marketplace service shared by the CLI tests; all of them are always stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from marketplace.devnet import Devnet, free_port

from cli_harness import CHALLENGE_WINDOW, EPOCH_LENGTH, CliEnv, DevnetMarket, ServiceThread  # noqa: I001


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliEnv]:
    workdir = tmp_path_factory.mktemp("cli")
    devnet = Devnet(port=free_port(), run_dir=workdir / "anvil")
    service = None
    try:
        devnet.start()
        market = DevnetMarket.deploy(devnet, workdir, challenge_window=CHALLENGE_WINDOW, epoch_length=EPOCH_LENGTH)
        service = ServiceThread(market, workdir)
        service.start()
        yield CliEnv(market, service.url, workdir)
    finally:
        if service is not None:
            service.stop()
        devnet.stop()
