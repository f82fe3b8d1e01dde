#!/usr/bin/env bash
# The whole test suite: set up what is missing (including the aarch64 cross compiler and qemu),
# then run every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo test --all-targets "$@"
# The SIP, SDP and RTP/RTCP parsers under cargo fuzz: HARK_FUZZ_RUNS (1000000) inputs each from
# the committed seeds, with a fixed seed so a run is reproducible and a failure is a regression,
# not luck (exploring further is `cargo fuzz run <target> --sanitizer none`). A crash fails the
# suite. Stable toolchain: no sanitizer.
fuzz_runs="${HARK_FUZZ_RUNS:-1000000}"
if (( fuzz_runs > 0 )); then
  for target in sip_message sdp_offer rtp_rtcp; do
    corpus="$(mktemp -d)"
    cargo fuzz run --sanitizer none -O "$target" "$corpus" "fuzz/seeds/$target" -- \
      -seed=1 -runs="$fuzz_runs" -rss_limit_mb=2048 -print_final_stats=1 \
      || { rm -rf "$corpus"; echo "test: fuzz target $target failed (see fuzz/artifacts/$target)" >&2; exit 1; }
    rm -rf "$corpus"
  done
fi
