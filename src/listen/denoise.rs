//! Noise suppression with RNNoise (nnnoiseless), which works on 10 ms frames at 48 kHz.

use nnnoiseless::DenoiseState;

/// RNNoise's rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per RNNoise frame (10 ms).
pub const FRAME: usize = DenoiseState::FRAME_SIZE;

/// A denoiser for one 48 kHz stream. Output lags input by at most one frame (10 ms); `flush`
/// emits the remainder.
pub struct Denoiser {
    state: Box<DenoiseState<'static>>,
    pending: Vec<f32>,
    frame_in: [f32; FRAME],
    frame_out: [f32; FRAME],
}

impl Default for Denoiser {
    fn default() -> Self {
        Self::new()
    }
}

impl Denoiser {
    /// A fresh denoiser.
    pub fn new() -> Self {
        Self {
            state: DenoiseState::new(),
            pending: Vec::with_capacity(FRAME),
            frame_in: [0.0; FRAME],
            frame_out: [0.0; FRAME],
        }
    }

    /// Denoises 48 kHz samples in [-1, 1], appending whole frames to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let mut input = input;
        while !input.is_empty() {
            let take = (FRAME - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == FRAME {
                self.run_frame(out);
            }
        }
    }

    /// Emits the last partial frame (zero-padded internally, trimmed on output).
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let n = self.pending.len();
        if n > 0 {
            self.pending.resize(FRAME, 0.0);
            self.run_frame(out);
            out.truncate(out.len() - (FRAME - n));
        }
    }

    /// Denoises one frame; RNNoise works at 16-bit scale.
    fn run_frame(&mut self, out: &mut Vec<f32>) {
        for (d, s) in self.frame_in.iter_mut().zip(&self.pending) {
            *d = s * 32768.0;
        }
        self.pending.clear();
        self.state
            .process_frame(&mut self.frame_out, &self.frame_in);
        out.extend(self.frame_out.iter().map(|s| s / 32768.0));
    }
}
