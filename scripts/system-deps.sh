#!/usr/bin/env bash
# Debian packages some tests drive for real: promtool (alert rules), chromium (the workbench's browser tests).
# With the argument `llm`: what building llama-cpp-python needs instead (a C/C++ compiler and cmake; see
# `make test-llm`). Installed only when missing, and only where apt-get can run as root; elsewhere the tests
# that need them say so clearly instead of passing.
set -euo pipefail
need=()
if [ "${1:-}" = "llm" ]; then
    command -v g++ >/dev/null 2>&1 || need+=(g++)
    command -v cmake >/dev/null 2>&1 || need+=(cmake)
else
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: missing ${need[*]} (install them with your package manager for the full test suite)" >&2
    exit 0
fi
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The prometheus package starts a server on install where an init system runs; tests only need promtool.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
