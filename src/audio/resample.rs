//! Streaming sample-rate conversion (rubato's FFT resampler), the one resampler in hark.
//!
//! Output is aligned with the input: the resampler's own delay is dropped from the start and
//! flushed at the end, so sample `n` at the input rate lands at `n * to / from`. Timestamps
//! computed downstream (VAD boundaries, turn cut points) therefore need no correction.

use rubato::{FftFixedIn, Resampler as _};

/// Converts a mono stream from one rate to another, chunk by chunk.
///
/// After the first few calls it does not allocate: input waits in a buffer of one chunk and
/// output is appended to the caller's `Vec` (whose capacity the caller keeps).
pub struct Resampler {
    from: u32,
    to: u32,
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    scratch: Vec<Vec<f32>>,
    skip: usize,
    consumed: u64,
    produced: u64,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz (a pass-through when they are equal).
    pub fn new(from: u32, to: u32) -> Self {
        let inner = (from != to).then(|| {
            FftFixedIn::<f32>::new(from as usize, to as usize, (from / 100) as usize, 1, 1)
                .expect("sample rates are validated by the caller")
        });
        let (chunk, max_out, delay) = inner.as_ref().map_or((0, 0, 0), |r| {
            (
                r.input_frames_next(),
                r.output_frames_max(),
                r.output_delay(),
            )
        });
        Self {
            from,
            to,
            inner,
            pending: Vec::with_capacity(chunk * 2),
            scratch: vec![vec![0.0; max_out]],
            skip: delay,
            consumed: 0,
            produced: 0,
        }
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Resamples `input`, appending what is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.consumed += input.len() as u64;
        let Some(chunk) = self.inner.as_ref().map(|r| r.input_frames_next()) else {
            out.extend_from_slice(input);
            self.produced += input.len() as u64;
            return;
        };
        let mut input = input;
        while !input.is_empty() {
            let take = (chunk - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == chunk {
                self.run_pending(out);
            }
        }
    }

    /// Pushes the tail out: after this, `out` holds every sample the input implies.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let Some(chunk) = self.inner.as_ref().map(|r| r.input_frames_next()) else {
            return;
        };
        let want = (self.consumed * self.to as u64).div_ceil(self.from as u64);
        while self.produced < want {
            self.pending.resize(chunk, 0.0);
            let before = out.len();
            self.run_pending(out);
            let excess = self.produced.saturating_sub(want) as usize;
            if excess > 0 {
                out.truncate((out.len() - excess).max(before));
                self.produced = want;
            }
        }
    }

    /// Resamples the one full chunk waiting in `pending`, dropping the start-up delay.
    fn run_pending(&mut self, out: &mut Vec<f32>) {
        let inner = self.inner.as_mut().expect("only called when resampling");
        let (_, n) = inner
            .process_into_buffer(&[&self.pending], &mut self.scratch, None)
            .expect("buffers are sized from the resampler itself");
        let drop = self.skip.min(n);
        self.skip -= drop;
        out.extend_from_slice(&self.scratch[0][drop..n]);
        self.produced += (n - drop) as u64;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn output_length_and_timing_follow_the_rate_ratio() {
        for (from, to) in [
            (48_000, 16_000),
            (16_000, 48_000),
            (44_100, 16_000),
            (8_000, 16_000),
        ] {
            let input = sine(from, 440.0, 1.0);
            // Feed in odd-sized pieces, as a sound card would.
            let mut r = Resampler::new(from, to);
            let mut out = Vec::new();
            for piece in input.chunks(333) {
                r.process(piece, &mut out);
            }
            r.flush(&mut out);
            assert_eq!(out.len(), to as usize, "{from}->{to}");
            // Aligned: the sine's zero crossings stay put (compare with the ideal at the out rate).
            let ideal = sine(to, 440.0, 1.0);
            let mid = &out[to as usize / 4..3 * to as usize / 4];
            let err = mid
                .iter()
                .zip(&ideal[to as usize / 4..])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 0.02, "{from}->{to}: max error {err}");
        }
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut r = Resampler::new(16_000, 16_000);
        let mut out = Vec::new();
        r.process(&[0.1, 0.2], &mut out);
        r.flush(&mut out);
        assert_eq!(out, vec![0.1, 0.2]);
    }
}
