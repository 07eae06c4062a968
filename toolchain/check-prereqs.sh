#!/bin/sh
# One clear line per missing prerequisite, then a non-zero exit.
# Usage: check-prereqs.sh <python-executable>
python=${1:-python3}
status=0
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python not found: install Python 3.11 or newer (or run make PYTHON=/path/to/python3.11)" >&2
  status=1
elif ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  if found=$("$python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))' 2>/dev/null); then
    echo "error: Python $found is too old: install Python 3.11 or newer (or run make PYTHON=/path/to/python3.11)" >&2
  else
    echo "error: $python does not run: install Python 3.11 or newer (or run make PYTHON=/path/to/python3.11)" >&2
  fi
  status=1
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "error: Node.js not found: install Node.js 18 or newer (with npm)" >&2
  status=1
elif ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then
  echo "error: Node.js $(node --version) is too old: install Node.js 18 or newer" >&2
  status=1
fi
exit $status
