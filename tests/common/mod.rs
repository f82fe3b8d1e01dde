//! Shared test material: the fetched real speech, the committed reference outputs, and the
//! front end built the way the binary builds it.
#![allow(dead_code)]

use std::path::PathBuf;

use hark::audio::{read_wav, Audio};
use hark::listen::models::ModelStore;
use serde::Deserialize;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A speech file fetched by models/fetch.py; a clear failure if the fetch has not run.
pub fn speech(name: &str) -> Audio {
    let path = root().join("models/speech").join(name);
    read_wav(&path).unwrap_or_else(|e| {
        panic!(
            "{e}\nreal speech comes from the moonshine-voice wheel: run `python3 models/fetch.py`"
        )
    })
}

/// Every speech file.
pub const SPEECH: [&str; 4] = [
    "beckett.wav",
    "clone-test.wav",
    "endgame_nagg_nell.wav",
    "two_cities.wav",
];

/// Only the repository's models directory (no system paths, no embedded fallback needed).
pub fn store() -> ModelStore {
    ModelStore::with_dirs(vec![root().join("models")])
}

/// The onnxruntime library for this machine; the test command fetches it, so its absence fails.
pub fn onnxruntime() -> PathBuf {
    let p = store()
        .onnxruntime_library()
        .expect("libonnxruntime.so not fetched: run `python3 models/fetch.py`");
    assert!(p.is_file(), "{} missing", p.display());
    p
}

#[derive(Deserialize)]
pub struct Reference {
    pub silero: Vec<SileroRef>,
    pub mel: Vec<MelRef>,
    pub smart_turn: Vec<TurnRef>,
}

#[derive(Deserialize)]
pub struct SileroRef {
    pub file: String,
    pub probs: Vec<f32>,
}

#[derive(Deserialize)]
pub struct MelRef {
    pub file: String,
    pub end: usize,
    pub features: String,
    pub prob: f32,
}

#[derive(Deserialize)]
pub struct TurnRef {
    pub file: String,
    pub end: usize,
    pub prob: f32,
}

/// The outputs scripts/make-reference.py recorded with onnxruntime and Pipecat's extractor.
pub fn reference() -> Reference {
    let text = std::fs::read_to_string(root().join("tests/data/reference/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A committed feature blob ([80][800] little-endian f32).
pub fn reference_features(name: &str) -> Vec<f32> {
    std::fs::read(root().join("tests/data/reference").join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Where speech is in a clean recording, found from energy alone (independent of Silero):
/// 10 ms frames 20 dB above the recording's noise floor (its 10th percentile) and within 35 dB of
/// its loudest, gaps under 250 ms bridged, regions of 0.5 s or more.
/// Returns (start, end) sample indices.
pub fn energy_regions(audio: &Audio) -> Vec<(usize, usize)> {
    let hop = audio.rate as usize / 100;
    let db: Vec<f32> = audio
        .samples
        .chunks(hop)
        .map(|c| {
            let rms = (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt();
            20.0 * rms.max(1e-9).log10()
        })
        .collect();
    let peak = db.iter().cloned().fold(f32::MIN, f32::max);
    let mut sorted = db.clone();
    sorted.sort_by(f32::total_cmp);
    let noise = sorted[sorted.len() / 10];
    let floor = (noise + 20.0).max(peak - 35.0);
    let mut regions: Vec<(usize, usize)> = Vec::new();
    for (i, &d) in db.iter().enumerate() {
        if d < floor {
            continue;
        }
        match regions.last_mut() {
            Some((_, end)) if i - *end <= 25 => *end = i + 1,
            _ => regions.push((i, i + 1)),
        }
    }
    regions
        .into_iter()
        .filter(|(s, e)| e - s >= 50)
        .map(|(s, e)| (s * hop, (e * hop).min(audio.samples.len())))
        .collect()
}
