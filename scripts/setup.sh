#!/usr/bin/env bash
# Installs whatever hark's build, demo and tests need and is missing; safe to run again.
#   scripts/setup.sh          Debian packages for building and running, Rust toolchain, models
#   scripts/setup.sh --test   also the aarch64 cross compiler and qemu for the cross-build test
# Needs: Debian 12 (or later) with rustup; root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

test_deps=0
[[ "${1:-}" == "--test" ]] && test_deps=1

# espeak-ng: the offline voice ([tts] provider = "espeak"), so the device can speak without network.
# libasound2-dev + pkg-config: the kiosk's ALSA audio (the alsa crate links libasound).
packages=(gcc libc6-dev pkg-config libasound2-dev python3 python3-pip fonts-dejavu-core
  ca-certificates espeak-ng)
if (( test_deps )); then
  # The aarch64 build links the board's libasound: Debian's multiarch arm64 package.
  packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static libasound2-dev:arm64)
  # The SIP tests' real peers: kamailio as registrar/proxy (with its TLS module for SIP over
  # TLS), baresip as the caller.
  packages+=(kamailio kamailio-tls-modules baresip-core)
  # sox: the SIP media tests decode DTMF tone files a real tool made.
  packages+=(sox)
  # The NAT test: network namespaces (iproute2), Linux's masquerading (nftables) and a look at
  # its mappings (conntrack).
  packages+=(iproute2 nftables conntrack)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  sudo=""
  if (( EUID != 0 )); then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  if [[ " ${missing[*]} " == *":arm64 "* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
  fi
  # A mirror mid-sync can fail one index (seen here: bookworm-security for one architecture);
  # what the install needs may still be there, so only a failed install stops the setup.
  $sudo apt-get update -qq || echo "setup: apt-get update reported errors; installing anyway" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v rustup >/dev/null || { echo "setup: rustup is required (https://rustup.rs)" >&2; exit 1; }
# rust-toolchain.toml pins the toolchain; asking for it installs it (and its components) if missing.
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
if (( test_deps )); then
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu
  # cargo fuzz: scripts/test.sh runs the SIP/SDP/RTP parsers' fuzz targets (fuzz/) with it, on
  # the stable toolchain (--sanitizer none); installed once.
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
fi

# Python's pip only downloads wheels here; nothing is installed into the system Python.
python3 -m pip --version >/dev/null 2>&1 || { echo "setup: python3 -m pip is not available" >&2; exit 1; }
python3 models/fetch.py
