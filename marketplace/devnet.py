"""Local anvil devnet: start in the background, wait for its RPC, stop only what we started.

Used by `make devnet` / `make devnet-stop` (through ``python -m marketplace.devnet``) and by
the test fixture that needs a real node, so both start anvil the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8545
DEFAULT_CHAIN_ID = 31337
# The private keys of anvil's ten default accounts (mnemonic "test test ... junk"): public
# knowledge, for local devnets and tests only.
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
]


class DevnetError(Exception):
    """A devnet could not be started or stopped; the message says what to do."""


def find_anvil() -> Path:
    """The anvil binary shipped in the npm package for this platform (not the node wrapper,
    whose pid would not be anvil's), else one on PATH."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform, sys.platform)
    shipped = PROJECT_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if shipped.is_file():
        return shipped
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise DevnetError("anvil not found: run 'npm ci' in the project (installs @foundry-rs/anvil)")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rpc_chain_id(url: str, timeout: float = 1.0) -> int | None:
    """eth_chainId of the node at `url`, or None when nothing answers there."""
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return int(response.json()["result"], 16)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not a running node.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return True


def _is_our_anvil(pid: int, port: int) -> bool:
    """False when `pid` now belongs to something else (a stale pid file whose pid was reused),
    so `stop` never signals a process that is not the anvil we started on `port`."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return args[0].endswith(b"anvil") and str(port).encode() in args


@dataclass
class Devnet:
    """One anvil process, tracked by a pid file in `run_dir`."""

    port: int = DEFAULT_PORT
    block_time: float | None = None
    run_dir: Path = PROJECT_ROOT / ".run"
    chain_id: int = DEFAULT_CHAIN_ID

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"anvil-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"anvil-{self.port}.log"

    def running_pid(self) -> int | None:
        """Pid of the anvil this project started on our port, if it is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) and _is_our_anvil(pid, self.port) else None

    def start(self, timeout: float = 30.0) -> bool:
        """Start anvil unless ours already runs; True when this call started it."""
        if self.running_pid() is not None and rpc_chain_id(self.url) is not None:
            return False
        self.pid_file.unlink(missing_ok=True)
        if not port_is_free(self.port):
            raise DevnetError(
                f"port {self.port} is already in use by another process; "
                f"stop it or choose another port (DEVNET_PORT={self.port + 1})"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(find_anvil()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--code-size-limit", "24576",  # enforce EIP-170 like real chains do
        ]
        if self.block_time:
            command += ["--block-time", str(self.block_time)]
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise DevnetError(f"anvil exited with code {process.returncode}: {tail[0]}")
            if rpc_chain_id(self.url, timeout=0.5) == self.chain_id:
                return True
            time.sleep(0.1)
        self.stop()
        raise DevnetError(f"anvil did not answer on {self.url} within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the anvil we started (never anything else); True when one was stopped."""
        pid = self.running_pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Reap it if it is our child (tests); otherwise just poll for it to go.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return True
            except ChildProcessError:
                pass
            if not _pid_alive(pid):
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap it if it became our zombie meanwhile
                except ChildProcessError:
                    pass
                return True
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        return True


def devnet_from_env() -> Devnet:
    block_time = os.environ.get("DEVNET_BLOCK_TIME") or None
    return Devnet(
        port=int(os.environ.get("DEVNET_PORT", DEFAULT_PORT)),
        block_time=float(block_time) if block_time else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketplace.devnet", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    try:
        devnet = devnet_from_env()
    except ValueError as exc:
        print(f"devnet: bad DEVNET_PORT or DEVNET_BLOCK_TIME: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "start":
            started = devnet.start()
            state = "started" if started else "already running"
            print(f"devnet {state} at {devnet.url} (pid {devnet.running_pid()}, log {devnet.log_file})")
        elif args.action == "stop":
            print("devnet stopped" if devnet.stop() else "devnet was not running (nothing of ours to stop)")
        else:
            pid = devnet.running_pid()
            print(f"devnet running at {devnet.url} (pid {pid})" if pid else "devnet not running")
            return 0 if pid else 1
    except DevnetError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
