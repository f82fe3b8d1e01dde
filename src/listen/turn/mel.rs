//! Whisper-style log-mel features for the Smart Turn v3 end-of-turn model.
//!
//! Smart Turn v3 was trained on `transformers.WhisperFeatureExtractor(chunk_length=8)` output,
//! so this module reproduces that computation (Pipecat vendors it as `_whisper_features.py`):
//! normalise 8 s of 16 kHz audio to zero mean and unit variance, take a centred (reflect-padded)
//! 400-point STFT with hop 160 and a periodic Hann window, project the power spectrum onto 80
//! Slaney-normalised mel filters, then take log10, clamp to 8 decades below the peak and rescale
//! with `(x + 4) / 4`.
//!
//! The reference works in f64; this version works in f32 (the normalisation sums accumulate
//! into f64) and stays within ~1e-5 of it, far below anything that moves the model's output.
//! The FFT (realfft) is about two thirds of the ~0.65 ms a call takes on an x86-64 server core.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Sample rate the model expects; callers must resample to this first.
pub const SAMPLE_RATE: u32 = 16_000;
/// Length of the analysis window the model sees: 8 s at [`SAMPLE_RATE`].
pub const N_SAMPLES: usize = 128_000; // 8 s
/// Number of mel bands (rows of the feature matrix).
pub const N_MELS: usize = 80;
/// Number of STFT frames kept (columns of the feature matrix); the reference drops the 801st.
pub const N_FRAMES: usize = 800;

const N_FFT: usize = 400;
const HOP: usize = 160;
const PAD: usize = N_FFT / 2;
const N_BINS: usize = N_FFT / 2 + 1;
const MEL_FLOOR: f32 = 1e-10;
const NORM_VARIANCE_EPS: f32 = 1e-7;

/// One triangular mel filter, stored only over the FFT bins where it is nonzero.
#[derive(Clone, Copy, Debug)]
struct Filter {
    /// First FFT bin the filter covers.
    first_bin: usize,
    /// Offset of this filter's weights in [`LogMel::weights`].
    offset: usize,
    /// Number of bins (and weights) covered.
    len: usize,
}

/// Reusable log-mel extractor.
///
/// Holds everything that does not depend on the audio (window, sparse filterbank, FFT plan)
/// plus the scratch buffers, so [`LogMel::compute`] runs without allocating; build one per
/// worker and reuse it for every turn decision.
pub struct LogMel {
    window: Vec<f32>,
    filters: Vec<Filter>,
    weights: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    /// Normalised, reflect-padded waveform (`N_SAMPLES + 2 * PAD`).
    padded: Vec<f32>,
    frame: Vec<f32>,
    /// FFT outputs of one block of frames (`spectra[frame * N_BINS + bin]`).
    spectra: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    /// Power spectra of one block of frames, bin-major (`power[bin * BLOCK + frame]`), so the
    /// filterbank projection runs across the block's frames in SIMD lanes.
    power: Vec<f32>,
}

/// Frames processed together by the filterbank projection (divides `N_FRAMES`).
const BLOCK: usize = 16;
const _: () = assert!(N_FRAMES.is_multiple_of(BLOCK));

impl LogMel {
    /// Precomputes the window, filterbank and FFT plan and allocates all scratch space.
    pub fn new() -> Self {
        // Periodic Hann window (np.hanning(N + 1)[:-1], same as torch.hann_window).
        let window = (0..N_FFT)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();

        let dense = mel_filterbank();
        let mut filters = Vec::with_capacity(N_MELS);
        let mut weights = Vec::new();
        for row in &dense {
            let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
            let last = row.iter().rposition(|&w| w > 0.0).map_or(first, |i| i + 1);
            debug_assert!(last > first, "every mel filter covers at least one FFT bin");
            filters.push(Filter {
                first_bin: first,
                offset: weights.len(),
                len: last - first,
            });
            weights.extend(row[first..last].iter().map(|&w| w as f32));
        }

        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let fft_scratch = fft.make_scratch_vec();
        LogMel {
            window,
            filters,
            weights,
            fft,
            padded: vec![0.0; N_SAMPLES + 2 * PAD],
            frame: vec![0.0; N_FFT],
            spectra: vec![Complex::new(0.0, 0.0); N_BINS * BLOCK],
            fft_scratch,
            power: vec![0.0; N_BINS * BLOCK],
        }
    }

    /// Computes the `[N_MELS][N_FRAMES]` log-mel features (mel-major: `out[m * N_FRAMES + t]`),
    /// the layout the Smart Turn ONNX input expects.
    ///
    /// `audio` must be exactly [`N_SAMPLES`] samples at [`SAMPLE_RATE`] (callers front-pad
    /// shorter clips with zeros); `out` must hold `N_MELS * N_FRAMES` values. Does not allocate.
    pub fn compute(&mut self, audio: &[f32], out: &mut [f32]) {
        assert_eq!(
            audio.len(),
            N_SAMPLES,
            "LogMel::compute needs exactly N_SAMPLES samples"
        );
        assert_eq!(
            out.len(),
            N_MELS * N_FRAMES,
            "LogMel::compute output must be N_MELS * N_FRAMES"
        );

        self.normalise_and_pad(audio);

        // Linear mel energies into `out`, tracking the peak. The reference's 801st frame is
        // dropped before its peak is taken, so it is never computed.
        let mut peak = [MEL_FLOOR; BLOCK];
        for t0 in (0..N_FRAMES).step_by(BLOCK) {
            for b in 0..BLOCK {
                let start = (t0 + b) * HOP;
                let src = &self.padded[start..start + N_FFT];
                for ((f, &x), &w) in self.frame.iter_mut().zip(src).zip(&self.window) {
                    *f = x * w;
                }
                self.fft
                    .process_with_scratch(
                        &mut self.frame,
                        &mut self.spectra[b * N_BINS..(b + 1) * N_BINS],
                        &mut self.fft_scratch,
                    )
                    .expect("FFT buffers are sized by the plan");
            }
            // Transpose to bin-major while squaring: contiguous stores, frames in SIMD lanes.
            for (k, row) in self.power.chunks_exact_mut(BLOCK).enumerate() {
                for (b, p) in row.iter_mut().enumerate() {
                    let c = self.spectra[b * N_BINS + k];
                    *p = c.re * c.re + c.im * c.im;
                }
            }
            for (m, filt) in self.filters.iter().enumerate() {
                let bins = &self.power[filt.first_bin * BLOCK..(filt.first_bin + filt.len) * BLOCK];
                let weights = &self.weights[filt.offset..filt.offset + filt.len];
                let mut acc = [0.0f32; BLOCK];
                for (p, &w) in bins.chunks_exact(BLOCK).zip(weights) {
                    for (a, &p) in acc.iter_mut().zip(p) {
                        *a += w * p;
                    }
                }
                for (pk, &a) in peak.iter_mut().zip(&acc) {
                    if a > *pk {
                        *pk = a;
                    }
                }
                out[m * N_FRAMES + t0..m * N_FRAMES + t0 + BLOCK].copy_from_slice(&acc);
            }
        }

        // log10(max(mel, 1e-10)) clamped to (its max - 8), then (x + 4) / 4. log10 is monotonic,
        // so both floors are applied in the linear domain before a single log pass.
        let peak = peak
            .iter()
            .fold(MEL_FLOOR, |a, &b| if b > a { b } else { a });
        let floor = (peak * 1e-8).max(MEL_FLOOR);
        for v in out.iter_mut() {
            let x = if *v > floor { *v } else { floor };
            *v = (fast_log10(x) + 4.0) * 0.25;
        }
    }

    /// Zero-mean unit-variance normalisation (as the reference, with eps so silence maps to
    /// zeros rather than NaN), written into `padded` with 200-sample reflect padding at each end.
    fn normalise_and_pad(&mut self, audio: &[f32]) {
        let mean = (blocked_sum(audio, |x| x) / audio.len() as f64) as f32;
        let var = (blocked_sum(audio, |x| (x - mean) * (x - mean)) / audio.len() as f64) as f32;
        let inv_std = 1.0 / (var + NORM_VARIANCE_EPS).sqrt();

        let (head, rest) = self.padded.split_at_mut(PAD);
        let (body, tail) = rest.split_at_mut(N_SAMPLES);
        for (d, &x) in body.iter_mut().zip(audio) {
            *d = (x - mean) * inv_std;
        }
        // numpy "reflect": mirror about the edge sample without repeating it.
        for (i, d) in head.iter_mut().enumerate() {
            *d = body[PAD - i];
        }
        for (j, d) in tail.iter_mut().enumerate() {
            *d = body[N_SAMPLES - 2 - j];
        }
    }
}

/// Sum of `f(x)` with f32 SIMD lanes over short blocks and f64 across blocks: accuracy
/// comparable to the reference's numpy pairwise f32 sum, but vectorised.
#[inline(always)]
fn blocked_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const LANES: usize = 16;
    const PER_LANE: usize = 16;
    let mut total = 0.0f64;
    for block in xs.chunks(LANES * PER_LANE) {
        let mut lanes = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
        for c in chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += f(x);
            }
        }
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + rest as f64;
    }
    total
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

/// Slaney-scale, Slaney-normalised triangular filterbank over 0..8000 Hz as `[N_MELS][N_BINS]`
/// (built in f64 exactly like the reference so the weights agree to rounding).
fn mel_filterbank() -> Vec<[f64; N_BINS]> {
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    let logstep = 27.0 / 6.4f64.ln();
    let hz_to_mel = |f: f64| {
        if f >= MIN_LOG_HZ {
            MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() * logstep
        } else {
            3.0 * f / 200.0
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= MIN_LOG_MEL {
            MIN_LOG_HZ * ((m - MIN_LOG_MEL) / logstep).exp()
        } else {
            200.0 * m / 3.0
        }
    };

    let nyquist = SAMPLE_RATE as f64 / 2.0;
    let (mel_lo, mel_hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let filter_hz: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let bin_hz = |k: usize| nyquist * k as f64 / (N_BINS - 1) as f64;

    (0..N_MELS)
        .map(|m| {
            let (left, centre, right) = (filter_hz[m], filter_hz[m + 1], filter_hz[m + 2]);
            let enorm = 2.0 / (right - left);
            let mut row = [0.0; N_BINS];
            for (k, w) in row.iter_mut().enumerate() {
                let f = bin_hz(k);
                let down = (f - left) / (centre - left);
                let up = (right - f) / (right - centre);
                *w = down.min(up).max(0.0) * enorm;
            }
            row
        })
        .collect()
}

/// log10 for positive, finite, normal f32 (here always >= 1e-10), within 2e-6 (about two f32
/// ulps at |log10| ~ 10).
///
/// Branch-free so the 64 000-value pass vectorises instead of calling libm's scalar `log10f`.
#[inline(always)]
fn fast_log10(x: f32) -> f32 {
    const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
    let bits = x.to_bits() as i32;
    // Split x = 2^e * m with m in [sqrt(1/2), sqrt(2)) so ln(m) is small and symmetric.
    let e = (bits - SQRT_HALF_BITS) >> 23;
    let m = f32::from_bits((bits - (e << 23)) as u32);
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172: odd series up to s^9.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 2.0 + s2 * (2.0 / 3.0 + s2 * (2.0 / 5.0 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0))));
    let ln = e as f32 * std::f32::consts::LN_2 + s * series;
    ln * std::f32::consts::LOG10_E
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max abs difference allowed from the numpy reference (observed: ~1.2e-5).
    const REFERENCE_TOLERANCE: f32 = 1e-3;

    const BECKETT_WAV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/speech/beckett.wav");
    const CLONE_TEST_WAV: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/speech/clone-test.wav");
    const BECKETT_MEL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/reference/mel-beckett.f32"
    );
    const CLONE_TEST_MEL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/reference/mel-clone-test.f32"
    );

    /// The last 8 s of a 16 kHz mono 16-bit wav, zero-padded at the front when shorter —
    /// exactly how the reference features were produced.
    fn last_eight_seconds(path: &str) -> Vec<f32> {
        let mut reader = hound::WavReader::open(path).expect("speech fixture opens");
        assert_eq!(reader.spec().sample_rate, SAMPLE_RATE);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<f32> = reader
            .samples::<i16>()
            .map(|s| s.expect("valid sample") as f32 / 32768.0)
            .collect();
        let tail = &samples[samples.len().saturating_sub(N_SAMPLES)..];
        let mut audio = vec![0.0; N_SAMPLES - tail.len()];
        audio.extend_from_slice(tail);
        audio
    }

    fn reference_features(path: &str) -> Vec<f32> {
        let bytes = std::fs::read(path).expect("reference features exist");
        assert_eq!(bytes.len(), N_MELS * N_FRAMES * 4);
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn features(audio: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; N_MELS * N_FRAMES];
        LogMel::new().compute(audio, &mut out);
        out
    }

    fn max_abs_error(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn matches_reference_features_on_real_speech() {
        for (wav, reference) in [(BECKETT_WAV, BECKETT_MEL), (CLONE_TEST_WAV, CLONE_TEST_MEL)] {
            let ours = features(&last_eight_seconds(wav));
            let err = max_abs_error(&ours, &reference_features(reference));
            assert!(
                err <= REFERENCE_TOLERANCE,
                "{wav}: max abs error {err} exceeds {REFERENCE_TOLERANCE}"
            );
        }
    }

    #[test]
    fn silence_gives_the_reference_floor_not_nan() {
        // The reference maps all-zero audio to zeros (eps in the variance, no 0/0), every mel
        // energy to the 1e-10 floor, so log10 = -10 everywhere and (-10 + 4) / 4 = -1.5 exactly;
        // the f32 log lands within an ulp or two of that. NaN fails the comparison.
        let out = features(&vec![0.0; N_SAMPLES]);
        assert!(
            out.iter().all(|&v| (v + 1.5).abs() < 1e-6),
            "silence should be a flat -1.5"
        );
    }

    #[test]
    fn reusing_one_extractor_gives_identical_results() {
        let audio = last_eight_seconds(BECKETT_WAV);
        let mut mel = LogMel::new();
        let mut first = vec![0.0; N_MELS * N_FRAMES];
        let mut second = vec![0.0; N_MELS * N_FRAMES];
        mel.compute(&audio, &mut first);
        mel.compute(&vec![0.0; N_SAMPLES], &mut second);
        mel.compute(&audio, &mut second);
        assert_eq!(first, second);
    }

    #[test]
    fn fast_log10_is_within_two_ulps_over_the_feature_range() {
        // Mel energies span roughly 1e-10..1e6; an f32 ulp of log10 there is up to ~1e-6.
        let mut x = 1e-10f32;
        while x < 1e10 {
            let err = (fast_log10(x) as f64 - (x as f64).log10()).abs();
            assert!(err < 2e-6, "log10({x}): error {err}");
            x *= 1.000_37;
        }
    }

    #[test]
    #[should_panic(expected = "N_SAMPLES")]
    fn rejects_audio_that_is_not_exactly_eight_seconds() {
        features(&vec![0.0; N_SAMPLES - 1]);
    }
}
