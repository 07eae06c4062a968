#!/usr/bin/env node
// solc-bridge: runs the npm `solc` package (solc-js) behind the command-line surface that
// py-solc-x (and so ape-solidity and Slither) expects from a native `solc` binary.
//
// Why not `solcjs`? It prints a ">>>" notice into stdout and its piped output was seen cut at
// 128 KiB. Here the whole result is produced in memory and written synchronously, all or nothing.
//
// Supported:  --version | --help | --standard-json [--base-path P] [--include-path P]...
//             [--allow-paths P1,P2]   (standard JSON input on stdin, output on stdout)
// Anything else fails loudly (exit 2) instead of being silently ignored.
"use strict";

const fs = require("fs");
const path = require("path");

const EXIT_USAGE = 2;
const EXIT_COMPILER = 1;

function fail(message, code) {
  fs.writeSync(2, `solc-bridge: ${message}\n`);
  process.exit(code);
}

function loadSolc() {
  // Resolve from the project's node_modules first (the bridge lives in <project>/toolchain).
  const searchPaths = [path.resolve(__dirname, ".."), process.cwd()];
  try {
    return require(require.resolve("solc", { paths: searchPaths }));
  } catch (err) {
    fail(`cannot load the npm package 'solc' (${err.message}); run 'npm ci' in the project`, EXIT_COMPILER);
  }
}

function parseArgs(argv) {
  const opts = { mode: null, basePath: null, includePaths: [], allowPaths: [] };
  const takesValue = new Set(["--base-path", "--include-path", "--allow-paths"]);
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value = null;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (takesValue.has(arg)) {
      if (value === null) {
        if (i + 1 >= argv.length) fail(`option ${arg} needs a value`, EXIT_USAGE);
        value = argv[++i];
      }
      if (arg === "--base-path") opts.basePath = value;
      else if (arg === "--include-path") opts.includePaths.push(value);
      else opts.allowPaths.push(...value.split(",").filter(Boolean));
      continue;
    }
    if (value !== null) fail(`option ${arg} takes no value`, EXIT_USAGE);
    if (arg === "--version" || arg === "--help" || arg === "--standard-json") {
      if (opts.mode && opts.mode !== arg) fail(`${opts.mode} and ${arg} cannot be combined`, EXIT_USAGE);
      opts.mode = arg;
      continue;
    }
    fail(
      `unsupported option or argument '${argv[i]}' (this bridge supports --version, --help, ` +
        `--standard-json, --base-path, --include-path, --allow-paths; use standard JSON input)`,
      EXIT_USAGE
    );
  }
  if (!opts.mode) fail("no mode given: use --standard-json (input on stdin) or --version", EXIT_USAGE);
  return opts;
}

function writeAll(fd, text) {
  const buffer = Buffer.from(text, "utf8");
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += fs.writeSync(fd, buffer, offset, buffer.length - offset);
    } catch (err) {
      if (err.code === "EAGAIN") continue; // non-blocking pipe is full: retry until drained
      throw err;
    }
  }
}

function makeImportCallback(opts) {
  // Same lookup order as native solc: the base path, then each include path.
  const roots = [opts.basePath || process.cwd(), ...opts.includePaths].map((p) => path.resolve(p));
  return function findImport(importPath) {
    const candidates = path.isAbsolute(importPath) ? [importPath] : roots.map((r) => path.join(r, importPath));
    for (const candidate of candidates) {
      try {
        return { contents: fs.readFileSync(candidate, "utf8") };
      } catch (err) {
        if (err.code !== "ENOENT" && err.code !== "EISDIR") return { error: `${candidate}: ${err.message}` };
      }
    }
    return { error: `File not found: ${importPath} (looked in ${roots.join(", ")})` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const solc = loadSolc();
  if (opts.mode === "--help") {
    writeAll(1, "solc-bridge: solc-js behind a native solc command line. Supported: --version, " +
      "--standard-json [--base-path P] [--include-path P] [--allow-paths P,...]\n");
    return;
  }
  if (opts.mode === "--version") {
    writeAll(1, `solc, the solidity compiler commandline interface (solc-js bridge)\nVersion: ${solc.version()}\n`);
    return;
  }
  const input = fs.readFileSync(0, "utf8");
  if (!input.trim()) fail("--standard-json expects the JSON input on stdin, got nothing", EXIT_USAGE);
  try {
    JSON.parse(input);
  } catch (err) {
    fail(`standard JSON input is not valid JSON: ${err.message}`, EXIT_USAGE);
  }
  let output;
  try {
    output = solc.compile(input, { import: makeImportCallback(opts) });
    JSON.parse(output); // never emit partial or broken JSON
  } catch (err) {
    fail(`compiler failed: ${err.message}`, EXIT_COMPILER);
  }
  writeAll(1, output);
}

main();
