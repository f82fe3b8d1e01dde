//! In-band DTMF: a Goertzel detector for key tones inside 8 kHz audio (for peers that send
//! DTMF as sound, or a PSTN leg behind a gateway that does not convert it).
//!
//! Every 10 ms the last 20 ms (160 samples) are analysed at the eight DTMF frequencies. A
//! window holds a digit when
//! - the strongest row and column tones are each above -40 dBFS,
//! - the twist is within limits: the column tone at most 4 dB above the row tone (reverse
//!   twist) and at most 8 dB below it (normal twist), as ITU-T Q.24 asks of receivers,
//! - every other row (column) is at least 8 dB below the strongest one, and
//! - the two tones carry at least 70 % of the window's energy, which rejects speech (its energy
//!   is spread over many harmonics) and windows the tone only partly fills.
//!
//! A digit is reported once it held for two consecutive windows (at least 30 ms of tone, so
//! a 40 ms key press is always seen and a 20 ms blip never is), and another is reported only
//! after two windows without any (the inter-digit gap).

use super::dtmf::DtmfDigit;

const RATE: f32 = 8000.0;
const N: usize = 160;
const HOP: usize = 80;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Keys by row then column.
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// -40 dBFS, as a sine's squared amplitude.
const MIN_AMPLITUDE_SQ: f32 = 1e-4;
const REVERSE_TWIST_DB: f32 = 4.0;
const NORMAL_TWIST_DB: f32 = 8.0;
const PEAK_RATIO_DB: f32 = 8.0;
const MIN_TONE_FRACTION: f32 = 0.7;
const HOLD_WINDOWS: u32 = 2;
const GAP_WINDOWS: u32 = 2;

/// A digit found in the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectedDigit {
    /// The digit.
    pub digit: DtmfDigit,
    /// The sample (counted from the detector's first input) at which it was confirmed.
    pub at_sample: u64,
}

/// The streaming detector of one call's received audio (8 kHz).
#[derive(Debug, Clone)]
pub struct InbandDetector {
    window: [f32; N],
    filled: usize,
    coeffs: [f32; 8],
    samples: u64,
    candidate: Option<DtmfDigit>,
    held: u32,
    quiet: u32,
    armed: bool,
}

impl Default for InbandDetector {
    fn default() -> Self {
        let mut coeffs = [0.0; 8];
        for (c, f) in coeffs.iter_mut().zip(ROWS.iter().chain(&COLS)) {
            *c = 2.0 * (2.0 * std::f32::consts::PI * f / RATE).cos();
        }
        Self {
            window: [0.0; N],
            filled: 0,
            coeffs,
            samples: 0,
            candidate: None,
            held: 0,
            quiet: GAP_WINDOWS,
            armed: true,
        }
    }
}

fn db(ratio: f32) -> f32 {
    10.0 * ratio.log10()
}

impl InbandDetector {
    /// Feeds 8 kHz samples in [-1, 1]; calls `on_digit` for each digit confirmed.
    pub fn push(&mut self, mut samples: &[f32], mut on_digit: impl FnMut(DetectedDigit)) {
        while !samples.is_empty() {
            let take = (N - self.filled).min(samples.len());
            self.window[self.filled..self.filled + take].copy_from_slice(&samples[..take]);
            self.filled += take;
            self.samples += take as u64;
            samples = &samples[take..];
            if self.filled == N {
                let found = self.analyse();
                self.track(found, &mut on_digit);
                self.window.copy_within(HOP.., 0);
                self.filled = N - HOP;
            }
        }
    }

    /// The digit one full window holds, if any.
    fn analyse(&self) -> Option<DtmfDigit> {
        let energy: f32 = self.window.iter().map(|x| x * x).sum();
        if energy <= 0.0 {
            return None;
        }
        // Squared amplitude of each tone: |X|² · 4 / N² for a sine of amplitude A gives A².
        let mut amp = [0f32; 8];
        for (a, &coeff) in amp.iter_mut().zip(&self.coeffs) {
            let (mut s1, mut s2) = (0f32, 0f32);
            for &x in &self.window {
                let s0 = x + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
            *a = power * 4.0 / (N * N) as f32;
        }
        let best = |a: &[f32]| {
            let (i, &m) = a
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .expect("four tones");
            let others_ok = a
                .iter()
                .enumerate()
                .all(|(j, &v)| j == i || db(m / v.max(1e-12)) >= PEAK_RATIO_DB);
            (i, m, others_ok)
        };
        let (r, row, rows_ok) = best(&amp[..4]);
        let (c, col, cols_ok) = best(&amp[4..]);
        if row < MIN_AMPLITUDE_SQ || col < MIN_AMPLITUDE_SQ || !rows_ok || !cols_ok {
            return None;
        }
        let twist = db(col / row);
        if !(-NORMAL_TWIST_DB..=REVERSE_TWIST_DB).contains(&twist) {
            return None;
        }
        // A sine of amplitude A has mean power A²/2.
        let tone_power = (row + col) / 2.0;
        if tone_power < MIN_TONE_FRACTION * energy / N as f32 {
            return None;
        }
        DtmfDigit::from_char(KEYS[r][c])
    }

    fn track(&mut self, found: Option<DtmfDigit>, on_digit: &mut impl FnMut(DetectedDigit)) {
        match found {
            None => {
                self.candidate = None;
                self.held = 0;
                self.quiet += 1;
                if self.quiet >= GAP_WINDOWS {
                    self.armed = true;
                }
            }
            Some(d) => {
                self.quiet = 0;
                if self.candidate == Some(d) {
                    self.held += 1;
                } else {
                    self.candidate = Some(d);
                    self.held = 1;
                }
                if self.armed && self.held >= HOLD_WINDOWS {
                    self.armed = false;
                    on_digit(DetectedDigit {
                        digit: d,
                        at_sample: self.samples,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key press: the two tones at `amp` each, `ms` long.
    fn key(k: char, ms: usize, amp: f32, twist_db: f32) -> Vec<f32> {
        let (r, col) = (0..4)
            .flat_map(|r| (0..4).map(move |c| (r, c)))
            .find(|&(r, c)| KEYS[r][c] == k)
            .unwrap();
        let col_amp = amp * 10f32.powf(twist_db / 20.0);
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / RATE;
                amp * (2.0 * std::f32::consts::PI * ROWS[r] * t).sin()
                    + col_amp * (2.0 * std::f32::consts::PI * COLS[col] * t).sin()
            })
            .collect()
    }

    fn detect(x: &[f32]) -> String {
        let mut d = InbandDetector::default();
        let mut s = String::new();
        d.push(x, |g| s.push(g.digit.to_char()));
        s
    }

    fn silence(ms: usize) -> Vec<f32> {
        vec![0.0; ms * 8]
    }

    #[test]
    fn every_key_is_recognised_once_per_press() {
        let mut x = Vec::new();
        for c in "123A456B789C*0#D".chars() {
            x.extend(key(c, 60, 0.3, 0.0));
            x.extend(silence(50));
        }
        assert_eq!(detect(&x), "123A456B789C*0#D");
    }

    #[test]
    fn duration_twist_and_gap_limits_hold() {
        let mut x = silence(10);
        x.extend(key('5', 40, 0.3, 0.0));
        x.extend(silence(60));
        assert_eq!(detect(&x), "5", "40 ms is always accepted");
        let mut x = silence(13);
        x.extend(key('5', 20, 0.3, 0.0));
        x.extend(silence(60));
        assert_eq!(detect(&x), "", "20 ms is too short");
        assert_eq!(detect(&key('8', 100, 0.2, 3.0)), "8", "3 dB reverse twist");
        assert_eq!(detect(&key('8', 100, 0.2, -7.0)), "8", "7 dB normal twist");
        assert_eq!(detect(&key('8', 100, 0.2, 6.0)), "", "6 dB reverse twist");
        assert_eq!(detect(&key('8', 100, 0.2, -11.0)), "", "11 dB normal twist");
        // Two presses of the same key with no gap are one press.
        let mut x = key('2', 80, 0.3, 0.0);
        x.extend(key('2', 80, 0.3, 0.0));
        assert_eq!(detect(&x), "2");
        assert_eq!(detect(&key('1', 100, 0.003, 0.0)), "", "below -40 dBFS");
    }

    #[test]
    fn a_single_tone_or_a_chord_of_three_is_not_a_digit() {
        let one: Vec<f32> = (0..800)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 697.0 * i as f32 / RATE).sin())
            .collect();
        assert_eq!(detect(&one), "");
        let mut three = key('1', 100, 0.2, 0.0);
        for (i, v) in three.iter_mut().enumerate() {
            *v += 0.2 * (2.0 * std::f32::consts::PI * 852.0 * i as f32 / RATE).sin();
        }
        assert_eq!(detect(&three), "");
    }
}
