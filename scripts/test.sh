#!/usr/bin/env bash
# The whole test suite: set up what is missing (including the aarch64 cross compiler and qemu),
# then run every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo test --all-targets "$@"
# The SIP, SDP and RTP/RTCP parsers under cargo fuzz, HARK_FUZZ_SECONDS (30) each from the
# committed seeds; a crash fails the suite (0 skips). Stable toolchain: no sanitizer.
fuzz_seconds="${HARK_FUZZ_SECONDS:-30}"
if (( fuzz_seconds > 0 )); then
  for target in sip_message sdp_offer rtp_rtcp; do
    corpus="$(mktemp -d)"
    cargo fuzz run --sanitizer none -O "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -print_final_stats=1 \
      || { rm -rf "$corpus"; echo "test: fuzz target $target failed (see fuzz/artifacts/$target)" >&2; exit 1; }
    rm -rf "$corpus"
  done
fi
