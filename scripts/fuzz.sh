#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, each from a copy
# of its committed seed corpus (fuzz/corpus/<target>), and prints one line per
# target:
#
#   fuzz <target>: <runs> runs, <crashes> crashes (cov <edges>, <n> exec/s,
#                  cpu <s>s, <k> slow inputs)
#
# Exits non-zero if any target crashed (panic, abort, stack overflow, ASan
# report, out-of-memory beyond -rss_limit_mb, or an input running longer than
# FUZZ_TIMEOUT); the crashing input is kept and its path printed.
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 20)] [TARGET...]
#
# Environment:
#   FUZZ_JOBS       cargo build jobs (default 2)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_TIMEOUT    seconds one input may run (default 30)
#   FUZZ_OUT        where corpora, logs and crash inputs go (default: a new
#                   temporary directory, kept when something crashed)
#   FUZZ_CPU=1      SECONDS_PER_TARGET counts the fuzzer's CPU time (user +
#                   system), not wall-clock time: it runs in rounds, each
#                   going on from the corpus the last one grew, until it has
#                   used that much. For campaigns on a shared machine (under
#                   nice, say), where wall-clock time says little.
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, -Zunstable-options), which RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept. The build goes to target/fuzz (its own
# CARGO_TARGET_DIR), so it never disturbs the main build, and fuzz/ is its own
# workspace, so `cargo build` at the root never builds it.
set -euo pipefail

SECS=${1:-20}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
JOBS=${FUZZ_JOBS:-2}
SANITIZER=${FUZZ_SANITIZER:-address}
TIMEOUT=${FUZZ_TIMEOUT:-30}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$ROOT/target/fuzz"
export CARGO_BUILD_JOBS="$JOBS"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked -j "$JOBS"
fi

cd "$ROOT/fuzz"
if [ $# -gt 0 ]; then
    TARGETS="$*"
else
    TARGETS=$(cargo fuzz list)
fi

# 16 codegen units: a much faster build of vtwin's dependency tree, at a small
# cost in executions per second.
BUILD=(--sanitizer "$SANITIZER" --codegen-units 16 --target-dir "$CARGO_TARGET_DIR")
# shellcheck disable=SC2086
for t in $TARGETS; do
    cargo fuzz build "${BUILD[@]}" "$t"
done

OUT=${FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/vtwin-fuzz.XXXXXX")}
mkdir -p "$OUT/tmp"
# The targets' data directories (an engine's store, disks) live in here and
# go with it.
export TMPDIR="$OUT/tmp"
failed=0
for t in $TARGETS; do
    bin="$CARGO_TARGET_DIR/$TRIPLE/release/$t"
    corpus="$OUT/corpus/$t"
    art="$OUT/artifacts/$t"
    log="$OUT/$t.log"
    rm -rf "$corpus" "$art"
    mkdir -p "$corpus" "$art"
    # The committed corpus is only read: new inputs go to the copy.
    cp -R "$ROOT/fuzz/corpus/$t/." "$corpus/"
    rc=0
    cpu=0 runs=0 rounds=0
    : >"$log"
    while :; do
        if [ "${FUZZ_CPU:-0}" = 1 ]; then
            left=$((SECS - cpu))
            [ "$left" -gt 0 ] || break
        else
            [ "$rounds" -eq 0 ] || break
            left=$SECS
        fi
        rounds=$((rounds + 1))
        # ASan: a Rust panic aborts; report allocation failures as crashes.
        TIMEFORMAT='%U %S'
        { time ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=0} \
            "$bin" -max_total_time="$left" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout="$TIMEOUT" \
            -print_final_stats=1 -artifact_prefix="$art/" "$corpus" >"$log.round" 2>&1 || rc=$?; } 2>"$log.cpu"
        cat "$log.round" >>"$log"
        used=$(awk '{printf "%d", $1 + $2 + 0.5}' "$log.cpu")
        cpu=$((cpu + used))
        r=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log.round" | tail -1)
        runs=$((runs + ${r:-0}))
        # A crash ends the campaign; so does a round that ran nothing.
        if [ "$rc" -ne 0 ] || [ "$used" -eq 0 ]; then break; fi
    done
    rm -f "$log.round" "$log.cpu"
    speed=$((runs / (cpu > 0 ? cpu : 1)))
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
    # libFuzzer also writes slow-unit-* for an input over -report_slow_units
    # (10 s); that is not a crash (-timeout is), and the first input, which
    # builds the target's engine, is slow on a loaded machine.
    crashes=$(find "$art" -type f ! -name 'slow-unit-*' | wc -l)
    slow=$(find "$art" -type f -name 'slow-unit-*' | wc -l)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # died without an artifact (a signal, say): see the log
    fi
    echo "fuzz $t: $runs runs, $crashes crashes (cov ${cov:-?}, $speed exec/s, cpu ${cpu}s, $slow slow inputs)"
    if [ "$crashes" -ne 0 ]; then
        failed=1
        find "$art" -type f ! -name 'slow-unit-*' -printf "  crash input: %p\n"
        echo "  log: $log"
        grep -m1 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY" "$log" | sed 's/^/  /' || true
    fi
done
rm -rf "$OUT/tmp"

if [ "$failed" -ne 0 ]; then
    echo "fuzzing found crashes; inputs and logs are in $OUT" >&2
    exit 1
fi
[ -n "${FUZZ_OUT:-}" ] || rm -rf "$OUT"
