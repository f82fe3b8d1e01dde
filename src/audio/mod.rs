//! Audio buffers, WAV files and resampling: the formats every stage agrees on.
//!
//! Inside hark audio is mono `f32` in [-1, 1] at a stated rate. Conversions happen once, at the
//! edges (a WAV file, a sound card, an RTP stream), never between stages.

pub mod mixer;
pub mod pcm;
pub mod resample;
pub mod ring;
pub mod wav;

pub use resample::Resampler;
pub use wav::{read_wav, read_wav_bytes, write_wav, WavError};

/// A mono recording at a known sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Samples per second.
    pub rate: u32,
    /// Mono samples in [-1, 1].
    pub samples: Vec<f32>,
}

impl Audio {
    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / self.rate as f64
    }

    /// This recording at another rate (a copy; the original is left alone).
    pub fn resampled(&self, rate: u32) -> Audio {
        if rate == self.rate {
            return self.clone();
        }
        let mut r = Resampler::new(self.rate, rate);
        let mut out =
            Vec::with_capacity(self.samples.len() * rate as usize / self.rate as usize + 1024);
        r.process(&self.samples, &mut out);
        r.flush(&mut out);
        Audio { rate, samples: out }
    }
}
