//! 16-bit little-endian PCM, the wire format of every speech service, to and from the `f32`
//! samples used everywhere inside hark.
//!
//! Both directions append to a caller's buffer, so a stream that reuses its buffers converts
//! without allocating once they have grown.

/// Appends `samples` (clamped to [-1, 1]) to `out` as PCM16 little-endian bytes.
pub fn encode_pcm16(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends the samples of PCM16 little-endian `bytes` to `out`. An odd trailing byte (half a
/// sample) is ignored; the return value says whether there was one, so a caller that receives
/// audio in arbitrary chunks can carry it over.
pub fn decode_pcm16(bytes: &[u8], out: &mut Vec<f32>) -> bool {
    let chunks = bytes.chunks_exact(2);
    let odd = !chunks.remainder().is_empty();
    out.reserve(bytes.len() / 2);
    out.extend(chunks.map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0));
    odd
}

/// Reassembles PCM16 samples from chunks that may split a sample between them (HTTP bodies,
/// base64 deltas of odd length).
#[derive(Debug, Default)]
pub struct Pcm16Decoder {
    carry: Option<u8>,
}

impl Pcm16Decoder {
    /// Appends the samples completed by `bytes` to `out`, keeping a trailing half sample for
    /// the next call.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<f32>) {
        if let (Some(lo), Some((&hi, rest))) = (self.carry, bytes.split_first()) {
            out.push(i16::from_le_bytes([lo, hi]) as f32 / 32768.0);
            self.carry = None;
            bytes = rest;
        }
        if decode_pcm16(bytes, out) {
            self.carry = bytes.last().copied();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_one_step_and_clamps() {
        let x = [0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0];
        let mut bytes = Vec::new();
        encode_pcm16(&x, &mut bytes);
        assert_eq!(bytes.len(), 14);
        assert_eq!(&bytes[6..8], &32767i16.to_le_bytes());
        assert_eq!(&bytes[12..14], &(-32767i16).to_le_bytes(), "clamped");
        let mut y = Vec::new();
        assert!(!decode_pcm16(&bytes, &mut y));
        for (a, b) in x.iter().zip(&y) {
            assert!((a.clamp(-1.0, 1.0) - b).abs() < 1.0 / 16384.0, "{a} {b}");
        }
    }

    #[test]
    fn a_sample_split_across_chunks_is_reassembled() {
        let mut bytes = Vec::new();
        encode_pcm16(&[0.25, -0.75, 0.125], &mut bytes);
        let mut whole = Vec::new();
        decode_pcm16(&bytes, &mut whole);
        let mut d = Pcm16Decoder::default();
        let mut pieces = Vec::new();
        d.push(&bytes[..1], &mut pieces);
        d.push(&bytes[1..4], &mut pieces);
        d.push(&bytes[4..], &mut pieces);
        assert_eq!(pieces, whole);
    }
}
