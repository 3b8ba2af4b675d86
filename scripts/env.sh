# shellcheck shell=bash
# Source this file (". scripts/env.sh") to get what filerelay needs on PATH:
# Node >= 22 (installed from the npm registry into a local prefix when the
# system node is older), pnpm, nats-server (Debian's package when missing),
# and the workspace's dependencies. Idempotent and quiet when all is there.
# Used by README's Quick start and by .ci/run, so both set up the same way.

fr_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
# As root, tools go to /opt so other users (tests run a service as nobody) can run them.
if [ "$(id -u)" = 0 ]; then fr_default_tools=/opt/filerelay-tools; else fr_default_tools="$HOME/.cache/filerelay-tools"; fi
fr_tools="${FILERELAY_TOOLS_DIR:-$fr_default_tools}"

fr_node_major() { "${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

fr_setup() {
  mkdir -p "$fr_tools" || return 1
  case ":$PATH:" in *":$fr_tools/node_modules/.bin:"*) ;; *) export PATH="$fr_tools/node_modules/.bin:$PATH" ;; esac
  if [ "$(fr_node_major)" -lt 22 ]; then
    echo "filerelay: installing Node 22 into $fr_tools (system node is $(node --version 2>/dev/null || echo missing))" >&2
    npm install --prefix "$fr_tools" --no-audit --no-fund --loglevel=error node@22 >/dev/null || return 1
    hash -r
    [ "$(fr_node_major)" -ge 22 ] || { echo "filerelay: Node 22 install failed" >&2; return 1; }
  fi
  if ! command -v pnpm >/dev/null 2>&1; then
    echo "filerelay: installing pnpm into $fr_tools" >&2
    npm install --prefix "$fr_tools" --no-audit --no-fund --loglevel=error pnpm@10 >/dev/null || return 1
    hash -r
  fi
  if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "filerelay: installing Debian's nats-server" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null) || return 1
    else
      echo "filerelay: nats-server not found; install it (Debian/Ubuntu: sudo apt-get install nats-server) for the demo and tests" >&2
    fi
  fi
  case ":$PATH:" in *":/usr/sbin:"*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
  (cd "$fr_root" && pnpm install --frozen-lockfile --reporter=silent) || return 1
}

fr_setup
