#!/usr/bin/env bash
# Build vtwin (release), the bench driver and the vcsim peer, then run the
# benchmark; figures and ratios are printed. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/vmware/govmomi ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go golang-github-vmware-govmomi-dev
fi
cargo build --release -p vtwin -p vtwin-bench
gp=$(mktemp -d); mkdir -p "$gp/src" "$ROOT/target/bench"
ln -s "$ROOT/bench/vcsim" "$gp/src/vcsimpeer"
(cd "$gp/src/vcsimpeer" && GOPATH="$gp:/usr/share/gocode" GO111MODULE=off GOPROXY=off GOCACHE="$ROOT/target/gocache" go build -o "$ROOT/target/bench/vcsim-peer" .)
rm -rf "$gp"
exec target/release/vtwin-bench --vtwin target/release/vtwin --vcsim target/bench/vcsim-peer "$@"
