#!/usr/bin/env bash
# The whole test suite: set up what is missing (including the aarch64 cross compiler and qemu),
# then run every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec cargo test --all-targets "$@"
