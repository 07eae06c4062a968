"""Shared test setup: the project-local solc bridge, and real anvil devnets that always stop.

Contract tests use Ape's in-process chain (nothing to start). Tests marked ``anvil`` get a real
anvil from ``marketplace.devnet`` on a free 127.0.0.1 port with its own run dir; the fixtures
stop every devnet they started, whatever the test did.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from marketplace.devnet import Devnet, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# py-solc-x (inside ape-solidity) looks for the solc-js bridge here, as `make test` arranges.
os.environ.setdefault("SOLCX_BINARY_PATH", str(REPO_ROOT / ".solcx"))


def drop_dependency_cache() -> None:
    """Remove ape-solidity's copy of OpenZeppelin in contracts/.cache (~500 files): Ape lists at
    most 500 files under contracts/, so a stale copy can hide our own sources from the next Ape
    process (see the Makefile's DROP_DEP_CACHE). It is recreated whenever a compile needs it."""
    shutil.rmtree(REPO_ROOT / "contracts" / ".cache", ignore_errors=True)


drop_dependency_cache()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "anvil: needs a real anvil devnet (started by the fixture)")


MakeAnvil = Callable[..., Devnet]


@contextmanager
def _devnets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeAnvil]:
    made: list[Devnet] = []

    def make(*, port: int | None = None, start: bool = True, **kwargs) -> Devnet:
        devnet = Devnet(port=port or free_port(), run_dir=tmp_path_factory.mktemp("anvil"), **kwargs)
        made.append(devnet)
        if start:
            devnet.start()
        return devnet

    try:
        yield make
    finally:
        for devnet in made:
            devnet.stop()


@pytest.fixture
def make_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeAnvil]:
    """Factory: ``make_anvil(start=True, block_time=None)`` → a Devnet on a free port,
    stopped when the test ends."""
    with _devnets(tmp_path_factory) as make:
        yield make


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """One running anvil shared by a test module, stopped after it."""
    with _devnets(tmp_path_factory) as make:
        yield make()
