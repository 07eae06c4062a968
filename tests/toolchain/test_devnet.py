"""The anvil devnet (marketplace.devnet) and the deploy script against a real node.

Every anvil here listens on 127.0.0.1 and is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from marketplace.devnet import Devnet, DevnetError, free_port, rpc_chain_id
from marketplace.registry import Registry

pytestmark = pytest.mark.anvil

REPO_ROOT = Path(__file__).resolve().parents[2]
APE = Path(sys.executable).with_name("ape")


@pytest.fixture
def busy_port():
    """A port held by a listening socket that is not anvil."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_start__already_running__is_idempotent(make_anvil):
    devnet = make_anvil()
    pid = devnet.running_pid()
    assert pid is not None
    assert rpc_chain_id(devnet.url) == 31337
    assert devnet.start() is False
    assert devnet.running_pid() == pid


def test_start__port_bound_by_another_socket__raises_naming_the_port(busy_port, tmp_path):
    with pytest.raises(DevnetError, match=rf"port {busy_port} is already in use"):
        Devnet(port=busy_port, run_dir=tmp_path).start()
    assert not (tmp_path / f"anvil-{busy_port}.pid").exists()


def test_cli_start__port_busy__prints_one_line_and_exits_nonzero(busy_port):
    result = subprocess.run(
        [sys.executable, "-m", "marketplace.devnet", "start"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DEVNET_PORT": str(busy_port)},
    )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {busy_port} is already in use" in lines[0]


def test_stop__two_devnets__stops_only_its_own(make_anvil):
    ours, other = make_anvil(), make_anvil()
    other_pid = other.running_pid()
    assert ours.stop() is True
    assert rpc_chain_id(ours.url) is None
    assert ours.running_pid() is None
    assert other.running_pid() == other_pid
    assert rpc_chain_id(other.url) == 31337


def test_stop__pid_file_names_unrelated_process__leaves_it_alive(tmp_path):
    """A stale pid file whose pid now belongs to something else must not get it killed."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        devnet = Devnet(port=free_port(), run_dir=tmp_path)
        devnet.pid_file.write_text(f"{stranger.pid}\n")
        assert devnet.running_pid() is None
        assert devnet.stop() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop__not_running__returns_false(tmp_path):
    assert Devnet(port=free_port(), run_dir=tmp_path).stop() is False


def run_deploy(devnet: Devnet, registry_path: Path) -> subprocess.CompletedProcess[str]:
    # If this test process compiled, its dependency copy must not hide sources from the child.
    shutil.rmtree(REPO_ROOT / "contracts" / ".cache", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "MARKET_REGISTRY"}
    env["APE_FOUNDRY_HOST"] = devnet.url  # how ape-foundry is pointed at a non-default port
    return subprocess.run(
        [str(APE), "run", "deploy", "--network", "ethereum:local:foundry", "--registry", str(registry_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def test_deploy__fresh_anvil_then_rerun__registry_serves_plain_web3_and_stays_unchanged(anvil, tmp_path):
    registry_path = tmp_path / "registry.json"
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    assert w3.eth.block_number == 0  # our own fresh node

    first = run_deploy(anvil, registry_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "already deployed" not in first.stdout

    # The service path: registry file + plain web3.py, no Ape.
    registry = Registry.load(registry_path)
    credit = registry.get(31337, "ComputeCredit")
    usdc = registry.get(31337, "MockUSDC")
    assert w3.eth.block_number >= 3  # the deploys really went to this anvil's port
    assert w3.eth.get_code(credit.address) and w3.eth.get_code(usdc.address)
    assert w3.eth.contract(address=credit.address, abi=credit.abi).functions.symbol().call() == "CCR"
    assert w3.eth.contract(address=usdc.address, abi=usdc.abi).functions.decimals().call() == 6
    assert w3.eth.get_transaction_receipt(credit.tx_hash).blockNumber == credit.block_number

    before = registry_path.read_bytes()
    block_before = w3.eth.block_number
    second = run_deploy(anvil, registry_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already deployed") == len(registry.deployments(31337)), second.stdout
    assert registry_path.read_bytes() == before
    assert w3.eth.block_number == block_before
