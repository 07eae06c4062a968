# Compute Marketplace: `make demo` and `make test` each set up everything they need from nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APE := $(VENV)/bin/ape
SOLC_VERSION := $(shell node -p "require('./package.json').dependencies.solc" 2>/dev/null)
NETWORK ?= ethereum:local:foundry
# Devnet-friendly windows (2-minute challenge window, 10-minute reward epochs); see `ape run deploy --help`.
DEPLOY_ARGS ?= --challenge-window 120 --epoch-length 600
DEVNET_PORT ?= 8545
export DEVNET_PORT

# py-solc-x (inside ape-solidity) finds the solc-js bridge here, inside the project.
export SOLCX_BINARY_PATH := $(CURDIR)/.solcx

.PHONY: help setup compile demo test devnet devnet-stop deploy serve clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed node_modules/.installed .solcx/solc-v$(SOLC_VERSION)  ## Python venv, npm tools, solc bridge

$(VENV)/.installed: pyproject.toml
	@toolchain/check-prereqs.sh $(PYTHON)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

node_modules/.installed: package.json package-lock.json
	@toolchain/check-prereqs.sh $(PYTHON)
	@# `npm install` (not `npm ci`): the lock pins every version, but the registry mirror lacks
	@# some other-platform optional binaries that `npm ci` insists on finding in the lock.
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

.solcx/solc-v$(SOLC_VERSION): node_modules/.installed toolchain/register-solc-bridge.sh toolchain/solc-bridge.cjs
	@toolchain/register-solc-bridge.sh

# ape-solidity copies each dependency (all ~500 files of the OpenZeppelin npm package) into
# contracts/.cache when it compiles, but Ape lists at most 500 files under contracts/: a later
# Ape process can then miss our own sources (e.g. contracts/test/MockStablecoin.sol) depending on
# directory order. The copy is only needed while compiling, so it is removed before and after.
DROP_DEP_CACHE := rm -rf contracts/.cache

compile: setup  ## Compile the contracts (offline, solc-js through the bridge)
	@$(DROP_DEP_CACHE)
	$(APE) compile
	@$(DROP_DEP_CACHE)

test: compile  ## Run the whole test suite
	$(APE) test tests/

devnet: setup  ## Start anvil in the background (DEVNET_PORT, DEVNET_BLOCK_TIME)
	@$(PY) -m marketplace.devnet start

devnet-stop:  ## Stop the anvil that `make devnet` started
	@if [ -x $(PY) ]; then $(PY) -m marketplace.devnet stop; fi

deploy: devnet compile  ## Deploy the contracts to $(NETWORK) and write deployments/registry.json
	APE_FOUNDRY_HOST=http://127.0.0.1:$(DEVNET_PORT) $(APE) run deploy --network $(NETWORK) $(DEPLOY_ARGS)

# Devnet defaults for the service: anvil test account 1 matches, account 0 (the deployer, which
# holds the verifier role) verifies. Never use these keys off a local devnet.
DEVNET_MATCHER_KEY := 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
DEVNET_VERIFIER_KEY := 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80

serve: deploy  ## Run the matchmaking service (API on 127.0.0.1:8000) against the devnet
	MARKET_RPC_URL=http://127.0.0.1:$(DEVNET_PORT) MARKET_CONFIRMATIONS=$${MARKET_CONFIRMATIONS:-0} \
	MARKET_MATCHER_PRIVATE_KEY=$${MARKET_MATCHER_PRIVATE_KEY:-$(DEVNET_MATCHER_KEY)} \
	MARKET_VERIFIER_PRIVATE_KEY=$${MARKET_VERIFIER_PRIVATE_KEY:-$(DEVNET_VERIFIER_KEY)} \
	$(PY) -m marketplace serve

demo: compile  ## The market end to end on a devnet of its own: every deal path, live view, summary
	$(PY) -m marketplace.demo

.PHONY: bench-gas bench-service lint

bench-gas: compile  ## Gas benchmark on its own anvil; prints tables, rewrites the gas section of BENCHMARKS.md
	$(PY) bench/gas/run.py

# py-spy (the profiler behind the intake section's "what limits it") goes into .run/, not the venv.
BENCH_TOOLS := .run/bench-tools

bench-service: compile  ## Service benchmark (HTTP intake, end-to-end deals/s) on its own anvil; rewrites its BENCHMARKS.md section
	@test -x $(BENCH_TOOLS)/bin/py-spy || $(PY) -m pip install --quiet --target $(BENCH_TOOLS) py-spy \
		|| echo "bench-service: py-spy could not be installed; the intake profile will be missing"
	$(PY) bench/service/run.py

# Slither compiles contracts/*.sol (and what they import) in one standard-JSON call to the solc-js
# bridge; crytic-compile only reads `forge config` for remappings when foundry.toml exists, so forge
# never builds and `make fuzz` artifacts are untouched. Settings: slither.config.json.
# Fails on any high/medium finding not triaged in slither.db.json (reasons: SECURITY-TRIAGE.md).
SLITHER_INPUT := crytic-export/slither-input.json

lint: setup  ## Slither static analysis: fails on untriaged high/medium findings
	@mkdir -p $(dir $(SLITHER_INPUT))
	@$(PY) -c 'import glob, json, sys; json.dump({"language": "Solidity", "settings": {"evmVersion": "cancun"}, "sources": {f: {"urls": [f]} for f in sorted(glob.glob("contracts/*.sol"))}}, open(sys.argv[1], "w"))' $(SLITHER_INPUT)
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(VENV)/bin/slither $(SLITHER_INPUT) --compile-force-framework Solc-json --config-file slither.config.json

# Invariant fuzzing with Foundry's runner (fuzz/, foundry.toml; see FUZZING.md): two campaigns
# (deploy.py's defaults and the parameters' edges) run in parallel, FUZZ_RUNS x FUZZ_DEPTH handler
# calls each from a fixed seed, every invariant checked after every call. forge compiles through the
# solc-js bridge and never downloads anything.
FUZZ_SEED ?= 0x5eed
FUZZ_RUNS ?= 100
FUZZ_DEPTH ?= 500
# The platform binary npm installed: node_modules/.bin/forge (a node wrapper) exits 0 even when forge fails.
FORGE = $(firstword $(wildcard node_modules/@foundry-rs/forge-*/bin/forge) node_modules/.bin/forge)

.PHONY: fuzz
fuzz: setup  ## Invariant fuzzing (Foundry, fixed seed, >= 100,000 calls); prints the calls made
	@rm -rf out/fuzz-stats && mkdir -p out/fuzz-stats
	set -o pipefail; FOUNDRY_INVARIANT_RUNS=$(FUZZ_RUNS) FOUNDRY_INVARIANT_DEPTH=$(FUZZ_DEPTH) \
	FUZZ_STATS=out/fuzz-stats $(FORGE) test --fuzz-seed $(FUZZ_SEED) 2>&1 | tee out/fuzz-stats/forge.log; \
	status=$$?; $(PY) fuzz/summarize.py out/fuzz-stats/forge.log out/fuzz-stats || exit 1; exit $$status

clean: devnet-stop  ## Remove build outputs and local state (keeps .venv and node_modules)
	rm -rf .build .run deployments .solcx contracts/.cache
