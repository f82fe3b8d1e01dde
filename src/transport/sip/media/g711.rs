//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8): 8-bit logarithmic
//! companding of 8 kHz telephone audio.
//!
//! The formulas are the ITU's own (the G.191 software tools' `ulaw_compress`/`ulaw_expand`
//! and `alaw_compress`/`alaw_expand`), written from that description, so codes are bit-exact
//! with every other conforming implementation. Decoding goes through 256-entry tables built at
//! compile time.

/// A G.711 law, named by its RTP payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// µ-law, static payload type 0 (North America, Japan).
    Pcmu,
    /// A-law, static payload type 8 (Europe and most of the world).
    Pcma,
}

impl G711 {
    /// The static RTP payload type (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }

    /// The law of a static payload type, if it is one.
    pub fn from_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }

    /// The code of digital silence (what a quiet line sends).
    pub fn silence(self) -> u8 {
        match self {
            G711::Pcmu => 0xff,
            G711::Pcma => 0xd5,
        }
    }

    /// One 16-bit linear sample to its code.
    pub fn encode_sample(self, x: i16) -> u8 {
        match self {
            G711::Pcmu => ulaw_compress(x),
            G711::Pcma => alaw_compress(x),
        }
    }

    /// One code to its 16-bit linear value.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            G711::Pcmu => ULAW_TABLE[usize::from(code)],
            G711::Pcma => ALAW_TABLE[usize::from(code)],
        }
    }

    /// Encodes `samples` (clamped to [-1, 1]) into `out`, one byte per sample; `out` must be
    /// at least as long as `samples`.
    pub fn encode(self, samples: &[f32], out: &mut [u8]) {
        for (o, &s) in out.iter_mut().zip(samples) {
            *o = self.encode_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16);
        }
    }

    /// Decodes `codes` into `out` as samples in [-1, 1]; `out` must be at least as long.
    pub fn decode(self, codes: &[u8], out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = f32::from(self.decode_sample(c)) / 32768.0;
        }
    }
}

/// µ-law compression of a 16-bit sample (G.191's `ulaw_compress`: 14-bit magnitude, bias 33).
fn ulaw_compress(x: i16) -> u8 {
    let x = i32::from(x);
    // One's complement for negatives, as the ITU code does (so -1 is "negative zero").
    let mut absno = if x < 0 { (!x) >> 2 } else { x >> 2 } + 33;
    if absno > 0x1fff {
        absno = 0x1fff;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high = 8 - segno;
    let low = 0xf - ((absno >> segno) & 0xf);
    let code = (high << 4) | low;
    (if x >= 0 { code | 0x80 } else { code }) as u8
}

/// µ-law expansion (G.191's `ulaw_expand`), scaled to 16 bits.
const fn ulaw_expand(code: u8) -> i16 {
    let negative = code < 0x80;
    let m = !code;
    let exponent = ((m >> 4) & 7) as i32;
    let mantissa = (m & 0xf) as i32;
    let step = 4 << (exponent + 1);
    let v = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    (if negative { -v } else { v }) as i16
}

/// A-law compression of a 16-bit sample (G.191's `alaw_compress` on the 13 top bits).
fn alaw_compress(x: i16) -> u8 {
    let x = i32::from(x);
    let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
    if ix > 15 {
        let mut exp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            exp += 1;
        }
        ix -= 16;
        ix += exp << 4;
    }
    if x >= 0 {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

/// A-law expansion (G.191's `alaw_expand`), scaled to 16 bits.
const fn alaw_expand(code: u8) -> i16 {
    let ix = code ^ 0x55;
    let exponent = ((ix & 0x7f) >> 4) as i32;
    let mut mant = (ix & 0xf) as i32;
    if exponent > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 8;
    if exponent > 1 {
        mant <<= exponent - 1;
    }
    (if ix > 127 { mant } else { -mant }) as i16
}

const fn table(mu: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if mu {
            ulaw_expand(i as u8)
        } else {
            alaw_expand(i as u8)
        };
        i += 1;
    }
    t
}

const ULAW_TABLE: [i16; 256] = table(true);
const ALAW_TABLE: [i16; 256] = table(false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points_match_the_itu_tables() {
        // µ-law: 0xFF and 0x7F are ±0; 0x80/0x00 the extremes ±8031 in 14 bits (×4 = 32124).
        let u = G711::Pcmu;
        assert_eq!(u.decode_sample(0xff), 0);
        assert_eq!(u.decode_sample(0x7f), 0);
        assert_eq!(u.decode_sample(0x80), 32124);
        assert_eq!(u.decode_sample(0x00), -32124);
        assert_eq!(u.decode_sample(0xfe), 8, "first step: 2 in 14 bits");
        assert_eq!(
            u.decode_sample(0xef),
            132,
            "segment 1 starts at 33 in 14 bits"
        );
        assert_eq!(u.encode_sample(0), 0xff);
        assert_eq!(u.encode_sample(-1), 0x7f);
        assert_eq!(u.encode_sample(i16::MAX), 0x80);
        assert_eq!(u.encode_sample(i16::MIN), 0x00);
        // A-law: 0xD5/0x55 are ±1 in 13 bits (±8), 0xAA/0x2A the extremes ±4032 (×8 = 32256).
        let a = G711::Pcma;
        assert_eq!(a.decode_sample(0xd5), 8);
        assert_eq!(a.decode_sample(0x55), -8);
        assert_eq!(a.decode_sample(0xaa), 32256);
        assert_eq!(a.decode_sample(0x2a), -32256);
        assert_eq!(a.encode_sample(0), 0xd5);
        assert_eq!(a.encode_sample(-1), 0x55);
        assert_eq!(a.encode_sample(i16::MAX), 0xaa);
        assert_eq!(a.encode_sample(i16::MIN), 0x2a);
        assert_eq!(u.silence(), u.encode_sample(0));
        assert_eq!(a.silence(), a.encode_sample(0));
    }

    /// The codes of one sign, ordered from the smallest magnitude to the largest.
    fn by_magnitude(law: G711, positive: bool) -> Vec<u8> {
        (0u8..128)
            .map(|k| match (law, positive) {
                (G711::Pcmu, true) => 0xff - k,
                (G711::Pcmu, false) => 0x7f - k,
                (G711::Pcma, true) => (0x80 | k) ^ 0x55,
                (G711::Pcma, false) => k ^ 0x55,
            })
            .collect()
    }

    #[test]
    fn all_256_codes_decode_monotonically_and_symmetrically() {
        for law in [G711::Pcmu, G711::Pcma] {
            let pos: Vec<i32> = by_magnitude(law, true)
                .iter()
                .map(|&c| law.decode_sample(c).into())
                .collect();
            let neg: Vec<i32> = by_magnitude(law, false)
                .iter()
                .map(|&c| law.decode_sample(c).into())
                .collect();
            for w in pos.windows(2) {
                assert!(w[1] > w[0], "{law:?}: {} then {}", w[0], w[1]);
            }
            assert_eq!(pos, neg.iter().map(|v| -v).collect::<Vec<_>>(), "{law:?}");
            let mut all: Vec<i32> = pos.iter().chain(&neg).copied().collect();
            all.sort_unstable();
            all.dedup();
            let distinct = if law == G711::Pcmu { 255 } else { 256 };
            assert_eq!(
                all.len(),
                distinct,
                "{law:?}: one value per code (µ-law has ±0)"
            );
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for law in [G711::Pcmu, G711::Pcma] {
            for c in 0..=255u8 {
                let back = law.encode_sample(law.decode_sample(c));
                let want = if law == G711::Pcmu && c == 0x7f {
                    0xff
                } else {
                    c
                };
                assert_eq!(back, want, "{law:?} code {c:#04x}");
            }
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        // Steps double per segment: half a step is at most |x|/32 above the first segments,
        // and at most 8 (A-law) or 4+3 (µ-law's 14-bit truncation) near zero.
        for law in [G711::Pcmu, G711::Pcma] {
            for x in -32124i32..=32124 {
                let y = i32::from(law.decode_sample(law.encode_sample(x as i16)));
                let bound = (x.abs() >> 5) + 8;
                assert!((y - x).abs() <= bound, "{law:?}: {x} -> {y}");
            }
        }
    }

    #[test]
    fn a_sine_keeps_the_companding_snr() {
        // G.711's SNR for a loud sine is about 38 dB; anything below 35 dB is a broken law.
        let x: Vec<f32> = (0..8000)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1004.0 * i as f32 / 8000.0).sin())
            .collect();
        for law in [G711::Pcmu, G711::Pcma] {
            let mut codes = vec![0u8; x.len()];
            let mut y = vec![0f32; x.len()];
            law.encode(&x, &mut codes);
            law.decode(&codes, &mut y);
            let signal: f32 = x.iter().map(|v| v * v).sum();
            let noise: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            let snr = 10.0 * (signal / noise).log10();
            assert!(snr > 35.0 && snr < 45.0, "{law:?}: {snr} dB");
        }
    }
}
