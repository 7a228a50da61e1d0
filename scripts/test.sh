#!/usr/bin/env bash
# The whole vtwin test suite, on a fresh machine: installs what the tests
# need (Debian packages, a Python venv with the client libraries), then runs
# the Rust tests, the pyvmomi tests, the govmomi tests and the vim_rs tests
# against the real binary. `.ci/run` calls exactly this.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never
LOGS="$ROOT/target/test-logs"
mkdir -p "$LOGS"

step() { printf '\n=== %s ===\n' "$*"; }

# --- what the tests need ----------------------------------------------------
APT_PKGS=()
command -v go >/dev/null 2>&1 || APT_PKGS+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi ] || APT_PKGS+=(golang-github-vmware-govmomi-dev)
command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 || APT_PKGS+=(qemu-utils)
command -v nbdcopy >/dev/null 2>&1 && command -v nbdinfo >/dev/null 2>&1 || APT_PKGS+=(libnbd-bin)
command -v curl >/dev/null 2>&1 || APT_PKGS+=(curl)
command -v xmllint >/dev/null 2>&1 || APT_PKGS+=(libxml2-utils)
command -v pg_ctlcluster >/dev/null 2>&1 || APT_PKGS+=(postgresql)
if [ ${#APT_PKGS[@]} -gt 0 ]; then
  step "apt-get install ${APT_PKGS[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PKGS[@]}" || exit 1
fi
# --- PostgreSQL 15, the store's second backend: a fresh test database ------
step "postgresql"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
PGV=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
if [ "$(id -u)" = 0 ]; then pg_ctlcluster "${PGV:-15}" main start 2>/dev/null; else sudo pg_ctlcluster "${PGV:-15}" main start 2>/dev/null; fi
for _ in $(seq 1 30); do as_pg "pg_isready -q" && break; sleep 1; done
as_pg "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='vtwin'\"" | grep -q 1 || as_pg "psql -qc \"CREATE ROLE vtwin LOGIN PASSWORD 'vtwin'\"" || exit 1
as_pg "psql -qc 'DROP DATABASE IF EXISTS vtwin_test'" && as_pg "psql -qc 'CREATE DATABASE vtwin_test OWNER vtwin'" || exit 1
export VTWIN_TEST_POSTGRES=postgres://vtwin:vtwin@127.0.0.1:5432/vtwin_test
# The PostgreSQL tests fail rather than skip when it is missing here.
export VTWIN_REQUIRE_POSTGRES=1

VENV="$ROOT/.venv"
REQ=tests/python/requirements.txt
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/.requirements"; then
  step "python venv"
  python3 -m venv "$VENV" || exit 1
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" || exit 1
  cp "$REQ" "$VENV/.requirements"
fi

FAILED_SUITES=()
run_suite() { # name log command...
  local name=$1 log=$2; shift 2
  step "$name"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || FAILED_SUITES+=("$name")
}

# --- Rust: format, lint, unit and integration tests -------------------------
# (three workspaces: the root, fuzz/ and tests/vimrs)
fmt_check() {
  cargo fmt --all --check && (cd fuzz && cargo fmt --all --check) && (cd tests/vimrs && cargo fmt --all --check)
}
run_suite "cargo fmt" "$LOGS/fmt.log" fmt_check
# (the fuzz crate is outside the workspace, so it is linted on its own: an
# engine path it names that moved is found here, not at the fuzz stage)
clippy_check() {
  cargo clippy --workspace --all-targets -- -D warnings && (cd fuzz && cargo clippy --all-targets -- -D warnings)
}
run_suite "cargo clippy" "$LOGS/clippy.log" clippy_check
run_suite "cargo test" "$LOGS/cargo.log" cargo test --workspace
export VTWIN_BIN="$ROOT/target/debug/vtwin"

# --- pyvmomi ----------------------------------------------------------------
run_suite "pyvmomi" "$LOGS/pytest.log" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python

# --- the integration and client tests again, the store on PostgreSQL ---------
# (schema=auto: each server's data directory gets a schema of its own; the
# several-node tests in test_nodes.py are on PostgreSQL in the first pass)
PGURL="$VTWIN_TEST_POSTGRES?schema=auto"
run_suite "cargo test (PostgreSQL)" "$LOGS/cargo-pg.log" env VTWIN_DATABASE="$PGURL" cargo test -p vtwin --tests
run_suite "pyvmomi (PostgreSQL)" "$LOGS/pytest-pg.log" env VTWIN_DATABASE="$PGURL" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python --ignore tests/python/test_nodes.py

# --- govmomi 0.24.2 (Debian), GOPATH mode, no network -----------------------
go_tests() {
  local gp; gp=$(mktemp -d)
  mkdir -p "$gp/src"
  ln -s "$ROOT/tests/go/vtwintest" "$gp/src/vtwintest"
  local data; data=$(mktemp -d)
  "$VTWIN_BIN" serve --plain-http --listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 --data-dir "$data" --admin-password 'Go-Passw0rd!' --datastores 2 >"$data/out" 2>/dev/null &
  local pid=$!
  local addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's|^vtwin listening on http://||p' "$data/out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  (cd "$gp/src/vtwintest" && GOPATH="$gp:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOCACHE="$ROOT/target/gocache" \
    VTWIN_URL="http://administrator@vsphere.local:Go-Passw0rd!@$addr/sdk" go test -v -count=1 .)
  local rc=$?
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  rm -rf "$gp" "$data"
  return $rc
}
run_suite "govmomi" "$LOGS/go.log" go_tests

# --- vim_rs 0.7.0 (own workspace: a heavy build) ----------------------------
run_suite "vim_rs" "$LOGS/vimrs.log" env CARGO_TARGET_DIR="$ROOT/target/vimrs" cargo test --manifest-path tests/vimrs/Cargo.toml

# --- fuzzing: every cargo-fuzz target, a short bounded run each -------------
# (scripts/fuzz.sh installs cargo-fuzz; the long runs are made by hand)
run_suite "fuzz" "$LOGS/fuzz.log" bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

# --- summary ----------------------------------------------------------------
passed=0; failed=0
for l in "$LOGS/cargo.log" "$LOGS/cargo-pg.log" "$LOGS/vimrs.log"; do
  p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$l" | awk '{s+=$4} END {print s+0}')
  f=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$l" | awk '{s+=$6} END {print s+0}')
  passed=$((passed + p)); failed=$((failed + f))
done
for l in "$LOGS/pytest.log" "$LOGS/pytest-pg.log"; do
  p=$(grep -Eo '[0-9]+ passed' "$l" | tail -1 | awk '{print $1+0}'); passed=$((passed + ${p:-0}))
  f=$(grep -Eo '[0-9]+ failed' "$l" | tail -1 | awk '{print $1+0}'); failed=$((failed + ${f:-0}))
done
passed=$((passed + $(grep -c -- '^--- PASS' "$LOGS/go.log")))
passed=$((passed + $(grep -cE '^fuzz [a-z_]+: .* 0 crashes' "$LOGS/fuzz.log")))
failed=$((failed + $(grep -E '^fuzz [a-z_]+: ' "$LOGS/fuzz.log" | grep -vc ' 0 crashes')))
failed=$((failed + $(grep -c -- '^--- FAIL' "$LOGS/go.log")))
if [ ${#FAILED_SUITES[@]} -gt 0 ]; then
  echo "failed suites: ${FAILED_SUITES[*]}"
  [ "$failed" -gt 0 ] || failed=${#FAILED_SUITES[@]}
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ ${#FAILED_SUITES[@]} = 0 ]
