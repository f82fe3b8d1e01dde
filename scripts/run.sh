#!/usr/bin/env bash
# The main job: set up what is missing, build hark, and run it on its embedded default
# (`hark listen` on the bundled real speech: denoise, VAD and turn detection on the device).
# Extra arguments go to hark, e.g. `scripts/run.sh listen my.wav --plot out.png`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --quiet -- "$@"
