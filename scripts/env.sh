# shellcheck shell=bash
# Source this file (". scripts/env.sh") to get what filerelay needs on PATH:
# Node >= 22 (installed from the npm registry into a local prefix when the
# system node is older), pnpm, nats-server (Debian's package when missing),
# and the workspace's dependencies. Idempotent and quiet when all is there;
# says what it installs on a first run. Leaves nothing in the calling shell but
# PATH. Used by README's Quick start and by .ci/run, so both set up the same way.

fr_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
# As root, tools go to /opt so other users (tests run a service as nobody) can run them.
if [ "$(id -u)" = 0 ]; then fr_tools=/opt/filerelay-tools; else fr_tools="$HOME/.cache/filerelay-tools"; fi
fr_tools="${FILERELAY_TOOLS_DIR:-$fr_tools}"

case ":$PATH:" in *":$fr_tools/node_modules/.bin:"*) ;; *) export PATH="$fr_tools/node_modules/.bin:$PATH" ;; esac
case ":$PATH:" in *":/usr/sbin:"*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

# The installs run in a subshell: their helpers and variables vanish with it,
# and a lock on the tools directory makes a second first run (another
# terminal, a parallel CI job) wait instead of installing over the first.
mkdir -p "$fr_tools" && (
  if command -v flock >/dev/null 2>&1; then
    flock 9 || exit 1
  fi
  node_major() { "${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
  if [ "$(node_major)" -lt 22 ]; then
    echo "filerelay: installing Node 22 into $fr_tools (system node is $(node --version 2>/dev/null || echo missing))…" >&2
    npm install --prefix "$fr_tools" --no-audit --no-fund --loglevel=error node@22 >/dev/null || exit 1
    hash -r
    [ "$(node_major)" -ge 22 ] || { echo "filerelay: Node 22 install failed" >&2; exit 1; }
  fi
  if ! command -v pnpm >/dev/null 2>&1; then
    echo "filerelay: installing pnpm into $fr_tools…" >&2
    npm install --prefix "$fr_tools" --no-audit --no-fund --loglevel=error pnpm@10 >/dev/null || exit 1
    hash -r
  fi
  if ! command -v nats-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "filerelay: installing Debian's nats-server…" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null) || exit 1
    else
      echo "filerelay: nats-server not found; install it (Debian/Ubuntu: sudo apt-get install nats-server) for the demo and tests" >&2
    fi
  fi
  cd "$fr_root" || exit 1
  if [ -d node_modules/.pnpm ]; then
    pnpm install --frozen-lockfile --reporter=silent >&2
  else
    # First run: a minute of downloads, shown as they happen.
    echo "filerelay: installing the workspace's dependencies…" >&2
    pnpm install --frozen-lockfile --reporter=append-only >&2
  fi
) 9>"$fr_tools/.setup.lock"
fr_status=$?
hash -r 2>/dev/null
unset fr_root fr_tools
# The status of the setup is the status of `. scripts/env.sh`.
case "$fr_status" in 0) unset fr_status ;; *) unset fr_status && false ;; esac
