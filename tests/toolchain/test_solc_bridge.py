"""The solc-js bridge behaves like the native `solc` py-solc-x and ape-solidity expect."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import solcx
from packaging.version import Version
from solcx.exceptions import SolcError

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLC_VERSION = json.loads((REPO_ROOT / "package.json").read_text())["dependencies"]["solc"]
OZ_DIR = REPO_ROOT / "node_modules" / "@openzeppelin" / "contracts"
APE = Path(sys.executable).with_name("ape")

HELPER_SOL = """// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

contract HelperToken is ERC20 {
    constructor() ERC20("Helper", "HLP") {}
}
"""

MAIN_SOL = """// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {HelperToken} from "./lib/HelperToken.sol";

contract Main {
    HelperToken public immutable token = new HelperToken();
}
"""


@pytest.fixture(scope="module")
def bridge() -> Path:
    path = Path(os.environ["SOLCX_BINARY_PATH"]) / f"solc-v{SOLC_VERSION}"
    assert os.access(path, os.X_OK), f"{path} missing: run `make setup` (toolchain/register-solc-bridge.sh)"
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two files of our own: Main.sol imports lib/HelperToken.sol, which imports OpenZeppelin."""
    root = tmp_path_factory.mktemp("bridge-src")
    (root / "lib").mkdir()
    (root / "Main.sol").write_text(MAIN_SOL)
    (root / "lib" / "HelperToken.sol").write_text(HELPER_SOL)
    return root


def standard_input(root: Path) -> dict:
    # Only Main.sol is given: the bridge's import callback must find the rest on disk.
    return {
        "language": "Solidity",
        "sources": {"Main.sol": {"urls": [str(root / "Main.sol")]}},
        "settings": {
            "remappings": [f"@openzeppelin/contracts/={OZ_DIR}/"],
            "optimizer": {"enabled": True, "runs": 200},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode", "evm.deployedBytecode", "metadata"], "": ["ast"]}},
        },
    }


def run_bridge(bridge: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bridge), *args], input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def compiled(bridge: Path, sources: Path) -> tuple[dict, str]:
    """The multi-file compile through py-solc-x, plus the raw stdout it read from the pipe."""
    raw: list[str] = []
    real_wrapper = solcx.wrapper.solc_wrapper

    def spy(*args, **kwargs):
        result = real_wrapper(*args, **kwargs)
        raw.append(result[0])
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(solcx.wrapper, "solc_wrapper", spy)
        output = solcx.compile_standard(
            standard_input(sources), base_path=sources, allow_paths=[sources, OZ_DIR], solc_binary=bridge
        )
    return output, raw[0]


def test_version__bridge__parsed_by_solcx_as_npm_solc_version(bridge):
    assert solcx.wrapper.get_solc_version(bridge) == Version(SOLC_VERSION)


def test_compile_standard__multi_file_with_openzeppelin_import__compiles_every_contract(compiled):
    output, _ = compiled
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"]
    assert set(output["contracts"]) >= {
        "Main.sol",
        "lib/HelperToken.sol",
        f"{OZ_DIR}/token/ERC20/ERC20.sol",
    }
    assert output["contracts"]["Main.sol"]["Main"]["evm"]["bytecode"]["object"]
    abi_names = {item.get("name") for item in output["contracts"]["lib/HelperToken.sol"]["HelperToken"]["abi"]}
    assert {"transfer", "ERC20InsufficientBalance"} <= abi_names


def test_standard_json__output_over_128_kib__arrives_whole_through_the_pipe(compiled):
    output, raw_stdout = compiled
    assert len(raw_stdout.encode()) > 128 * 1024
    assert json.loads(raw_stdout) == output  # a cut-off stream would not parse


def test_compile_standard__syntax_error__raises_solc_error_with_parser_error(bridge, tmp_path):
    (tmp_path / "Bad.sol").write_text("pragma solidity 0.8.37;\ncontract Bad { function f( }\n")
    data = {"language": "Solidity", "sources": {"Bad.sol": {"urls": [str(tmp_path / "Bad.sol")]}},
            "settings": {"outputSelection": {"*": {"*": ["abi"]}}}}
    with pytest.raises(SolcError, match="ParserError"):
        solcx.compile_standard(data, base_path=tmp_path, solc_binary=bridge)


@pytest.mark.parametrize("args", [["--bin", "Foo.sol"], ["--optimize", "--standard-json"], ["Foo.sol"]])
def test_cli__unsupported_flag__exits_2_with_one_line(bridge, args):
    result = run_bridge(bridge, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unsupported option" in lines[0], result.stderr


def test_cli__empty_stdin__exits_2_with_one_line(bridge):
    result = run_bridge(bridge, "--standard-json", stdin="")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "solc-bridge: --standard-json expects the JSON input on stdin, got nothing"
    ]


def test_cli__invalid_json__exits_2_without_output(bridge):
    result = run_bridge(bridge, "--standard-json", stdin="{not json")
    assert (result.returncode, result.stdout) == (2, "")
    assert "not valid JSON" in result.stderr


def test_ape_compile__broken_contract__fails_with_solc_error_text(tmp_path):
    """A syntax error surfaces from `ape compile` as a clear SolcCompileError, non-zero exit."""
    (tmp_path / "contracts").mkdir()
    (tmp_path / "ape-config.yaml").write_text("name: broken-fixture\nsolidity:\n  version: 0.8.37\n")
    (tmp_path / "contracts" / "Broken.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.37;\ncontract Broken { function f( }\n"
    )
    assert APE.is_file() or shutil.which("ape"), "ape not installed next to this Python"
    result = subprocess.run(
        [str(APE) if APE.is_file() else "ape", "compile"], cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "SOLCX_BINARY_PATH": os.environ["SOLCX_BINARY_PATH"]},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "SolcCompileError" in output and "ParserError" in output, output
    assert "Broken.sol:3" in output, output
    assert "Traceback" not in output, output
