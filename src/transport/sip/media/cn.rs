//! Comfort noise (RFC 3389, static payload type 13): a sender in silence sends the level of its
//! background noise instead of audio, and the receiver fills the gap with noise at that level
//! so the line does not sound dead.
//!
//! Only the level byte is used; spectral coefficients, when present, are ignored (the noise is
//! white), which RFC 3389 §4 allows.

/// The static payload type of comfort noise at 8 kHz (RFC 3551).
pub const CN_PAYLOAD_TYPE: u8 = 13;

/// Why a comfort-noise payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CnError {
    /// The payload has no level byte.
    #[error("comfort-noise payload is empty")]
    Empty,
}

/// The noise level of a comfort-noise payload, in -dBov (0 = full scale, 127 = quietest).
pub fn parse_level(payload: &[u8]) -> Result<u8, CnError> {
    payload.first().map(|b| b & 0x7f).ok_or(CnError::Empty)
}

/// The level byte describing noise of RMS `rms` (full scale 1.0).
pub fn level_of_rms(rms: f32) -> u8 {
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

/// The RMS amplitude (full scale 1.0) of a level in -dBov.
pub fn rms_of_level(level: u8) -> f32 {
    10f32.powf(-f32::from(level & 0x7f) / 20.0)
}

/// White noise at a given level, from a small deterministic generator (no allocation, no
/// system randomness: the same call sounds the same in a test).
#[derive(Debug, Clone)]
pub struct NoiseGenerator {
    state: u32,
}

impl Default for NoiseGenerator {
    fn default() -> Self {
        Self { state: 0x9e37_79b9 }
    }
}

impl NoiseGenerator {
    /// Fills `out` with noise whose RMS is that of `level`.
    pub fn fill(&mut self, level: u8, out: &mut [f32]) {
        // Uniform noise in [-a, a] has RMS a/√3.
        let a = rms_of_level(level) * 3f32.sqrt();
        for o in out {
            // xorshift32
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            let u = self.state as f32 / u32::MAX as f32 * 2.0 - 1.0;
            // Level 0 would reach √3 at the peaks: the noise stays within full scale.
            *o = (u * a).clamp(-1.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_byte_is_read_and_its_noise_has_that_rms() {
        assert_eq!(parse_level(&[]), Err(CnError::Empty));
        assert_eq!(
            parse_level(&[40, 1, 2]),
            Ok(40),
            "spectral bytes are ignored"
        );
        assert_eq!(
            parse_level(&[0x80 | 40]),
            Ok(40),
            "the unused top bit is masked"
        );
        let mut g = NoiseGenerator::default();
        for level in [20u8, 40, 60] {
            let mut buf = vec![0f32; 8000];
            g.fill(level, &mut buf);
            let rms = (buf.iter().map(|v| v * v).sum::<f32>() / buf.len() as f32).sqrt();
            let db = -20.0 * rms.log10();
            assert!(
                (db - f32::from(level)).abs() < 0.5,
                "level {level}: {db} dB"
            );
            assert_eq!(level_of_rms(rms), level);
        }
        assert_eq!(level_of_rms(0.0), 127);
        assert_eq!(level_of_rms(2.0), 0, "louder than full scale is clamped");
        let mut loud = vec![0f32; 1000];
        g.fill(0, &mut loud);
        assert!(
            loud.iter().all(|v| v.abs() <= 1.0),
            "0 dBov stays within full scale"
        );
    }
}
