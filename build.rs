//! With the `bundled-models` feature the models and the demo speech are embedded in the binary;
//! say clearly how to get them when they are not there yet.
use std::path::Path;

const EMBEDDED: [&str; 3] = [
    "models/silero_vad_op18_ifless.onnx",
    "models/smart-turn-v3.2-cpu.onnx",
    "models/speech/beckett.wav",
];

fn main() {
    println!("cargo::rerun-if-changed=models/manifest.toml");
    if std::env::var_os("CARGO_FEATURE_BUNDLED_MODELS").is_none() {
        return;
    }
    for f in EMBEDDED {
        println!("cargo::rerun-if-changed={f}");
        if !Path::new(f).is_file() {
            panic!(
                "{f} is missing. The `bundled-models` feature (on by default) embeds it in the \
                 binary: run `python3 models/fetch.py` (or scripts/setup.sh) first, or build with \
                 --no-default-features and point --models-dir at a models directory."
            );
        }
    }
}
