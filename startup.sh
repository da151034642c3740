#!/usr/bin/env bash
# P2P-Chat on a fresh machine (Node.js and npm are the only prerequisites).
#   ./startup.sh         install what is missing, build the PWA, start a local ring of 3 servers
#   ./startup.sh --https [--host LAN-IP]   the same over HTTPS with a local CA (data/tls/ca.pem)
#   ./startup.sh test    install what is missing, run the whole test suite
#   ./startup.sh <task>  any other `deno task` (bench:latency, bench:chord, server, ...)
set -euo pipefail
cd "$(dirname "$0")"

DENO_PKG_DIR=tools/deno
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) DENO_PLATFORM=linux-x64-glibc ;;
  Linux-aarch64) DENO_PLATFORM=linux-arm64-glibc ;;
  Darwin-arm64) DENO_PLATFORM=darwin-arm64 ;;
  Darwin-x86_64) DENO_PLATFORM=darwin-x64 ;;
  *) echo "Unsupported platform $(uname -s)-$(uname -m): install Deno 2.9 yourself and run 'deno task start'." >&2; exit 1 ;;
esac
DENO="$DENO_PKG_DIR/node_modules/@deno/$DENO_PLATFORM/deno"

if [ ! -x "$DENO" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is needed to install Deno: install Node.js (with npm) first." >&2
    exit 1
  fi
  echo "Installing Deno (pinned in $DENO_PKG_DIR/package.json) through npm..."
  npm ci --prefix "$DENO_PKG_DIR" --no-audit --no-fund --loglevel=error
fi
# Use the real binary, not npm's Node wrapper: killing the wrapper would orphan Deno.
DENO="$(cd "$(dirname "$DENO")" && pwd)/deno"
export PATH="$(dirname "$DENO"):$PATH"

echo "Installing dependencies (pinned in deno.lock)..."
"$DENO" install --frozen --quiet --entrypoint server/main.ts client/build.ts tests/run.ts

# Options without a task go to the quick start: ./startup.sh --https --host 192.168.1.20
if [ "${1:-}" = "" ] || [ "${1#-}" != "${1}" ]; then
  task=start
else
  task="$1"
  shift
fi
if [ "$task" = "start" ]; then
  "$DENO" task build
fi
exec "$DENO" task "$task" "$@"
