//! The adaptive jitter buffer: packets go in as they arrive (in any order, duplicated, late),
//! and exactly one frame comes out per playout tick, always, whatever the network did.
//!
//! How it works, in the clock of the stream (8000 units a second for G.711):
//! - Packets are stored in fixed slots (no allocation once built), ordered by timestamp.
//!   Duplicates are recognised by their extended sequence number in a 128-packet window;
//!   packets whose audio is already past the playout point are late and dropped.
//! - Playout starts ("buffering" ends) once the buffered audio reaches the target delay. The
//!   target is one frame plus three times the RFC 3550 interarrival jitter estimate, clamped to
//!   `[min_delay, max_delay]`; it follows the network as the estimate moves.
//! - A frame with no packet while later packets are waiting is a loss: concealed. A frame with
//!   nothing buffered at all is an underrun: concealed too, but playout pauses (the playout
//!   point stays) and buffering starts again, which is how the delay grows when the network
//!   gets worse. When the smallest depth seen over a second stays more than a frame above the
//!   target, one frame is skipped, which is how it shrinks again.
//! - Packet-loss concealment is repeat-and-fade: the last good frame is repeated with a
//!   linear fade to zero over three frames (60 ms), then comfort noise (if the peer sent an RFC
//!   3389 level) or silence. (Not G.711 Appendix I's pitch-period repetition.)
//! - A new SSRC resets the buffer; a timestamp jump (more than a second away from the playout
//!   point, or a new talkspurt after the buffer ran dry) re-anchors the playout point.

use super::rtp::{ts_diff, SeqExtender};

/// How the buffer is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream (8000 for G.711).
    pub clock_rate: u32,
    /// Samples per playout frame (160 = 20 ms at 8 kHz).
    pub frame: usize,
    /// The smallest target delay, in milliseconds.
    pub min_delay_ms: u32,
    /// The largest target delay, in milliseconds; more buffered audio is skipped.
    pub max_delay_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 8000,
            frame: 160,
            min_delay_ms: 20,
            max_delay_ms: 200,
        }
    }
}

/// The longest packet accepted, in samples (60 ms at 8 kHz).
pub const MAX_PACKET: usize = 480;
/// Packets the buffer holds (1.28 s of 20 ms packets).
const SLOTS: usize = 64;
/// Frames of repeat-and-fade before comfort noise or silence.
const FADE_FRAMES: u32 = 3;
/// Playout ticks over which the smallest depth is taken before shrinking (1 s of 20 ms).
const SHRINK_WINDOW: u32 = 50;

/// What a packet carries, already decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Payload<'a> {
    /// Decoded audio samples in [-1, 1] (at most [`MAX_PACKET`]).
    Audio(&'a [f32]),
    /// An RFC 3389 comfort-noise packet with its level in -dBov; it covers one frame.
    ComfortNoise(u8),
    /// A packet of the same stream that carries no audio (an RFC 4733 event): only its
    /// sequence number is counted, so it is not mistaken for a loss.
    NoAudio,
}

/// One received packet's header fields and arrival time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit (start of a talkspurt).
    pub marker: bool,
    /// RTP SSRC.
    pub ssrc: u32,
    /// When it arrived, in the stream's clock units since any fixed origin.
    pub arrival: u64,
}

/// What [`JitterBuffer::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored for playout.
    Queued,
    /// Already received (same sequence number): dropped.
    Duplicate,
    /// Its audio was already played (or concealed): dropped.
    Late,
    /// Longer than [`MAX_PACKET`] or empty: dropped.
    Unusable,
}

/// What one playout frame contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Received audio.
    Audio,
    /// Repeat-and-fade of the last audio for a missing packet.
    Concealed,
    /// Comfort noise at the peer's last announced level.
    ComfortNoise,
    /// Nothing to play: zeros.
    Silence,
}

/// Counters since the buffer was made (they survive SSRC changes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets accepted (not duplicates).
    pub received: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets never received (RFC 3550: expected minus received, per SSRC, summed).
    pub lost: u64,
    /// Frames concealed (loss or underrun).
    pub concealed: u64,
    /// Frames skipped to bring the delay down.
    pub skipped: u64,
    /// Times the stream's SSRC changed.
    pub ssrc_changes: u64,
    /// Times the playout point was re-anchored on a timestamp jump or a new talkspurt.
    pub resyncs: u64,
    /// The RFC 3550 interarrival jitter estimate, in milliseconds.
    pub jitter_ms: f32,
    /// The current target delay, in milliseconds.
    pub target_ms: f32,
}

/// The received stream's numbers that an RTCP report block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceState {
    /// Its SSRC.
    pub ssrc: u32,
    /// Extended highest sequence number received.
    pub highest_seq: u64,
    /// Packets expected (from the first sequence number to the highest).
    pub expected: u64,
    /// Packets received (duplicates excluded).
    pub received: u64,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

struct Slot {
    used: bool,
    ts: u32,
    len: usize,
    noise: Option<u8>,
    samples: Box<[f32]>,
}

/// The adaptive jitter buffer of one received stream. See the module documentation.
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    ssrc: Option<u32>,
    seq: SeqExtender,
    first_seq: u64,
    seen_top: u64,
    seen_bits: u128,
    received_this_ssrc: u64,
    lost_before: u64,
    playing: bool,
    play_ts: Option<u32>,
    jitter: f64,
    last_transit: Option<i64>,
    min_depth: i64,
    ticks: u32,
    last_frame: Box<[f32]>,
    have_last: bool,
    fade: u32,
    noise_level: Option<u8>,
    noise: super::cn::NoiseGenerator,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer; all its memory is allocated here.
    pub fn new(cfg: JitterConfig) -> Self {
        assert!(cfg.frame > 0 && cfg.frame <= MAX_PACKET, "frame size");
        let slots = (0..SLOTS)
            .map(|_| Slot {
                used: false,
                ts: 0,
                len: 0,
                noise: None,
                samples: vec![0.0; MAX_PACKET].into_boxed_slice(),
            })
            .collect();
        let mut jb = Self {
            cfg,
            slots,
            ssrc: None,
            seq: SeqExtender::default(),
            first_seq: 0,
            seen_top: 0,
            seen_bits: 0,
            received_this_ssrc: 0,
            lost_before: 0,
            playing: false,
            play_ts: None,
            jitter: 0.0,
            last_transit: None,
            min_depth: i64::MAX,
            ticks: 0,
            last_frame: vec![0.0; cfg.frame].into_boxed_slice(),
            have_last: false,
            fade: 0,
            noise_level: None,
            noise: Default::default(),
            stats: JitterStats::default(),
        };
        jb.stats.target_ms = jb.ms(jb.target());
        jb
    }

    fn ms(&self, samples: i64) -> f32 {
        samples as f32 * 1000.0 / self.cfg.clock_rate as f32
    }

    fn samples_of_ms(&self, ms: u32) -> i64 {
        i64::from(ms) * i64::from(self.cfg.clock_rate) / 1000
    }

    /// The target delay in samples.
    fn target(&self) -> i64 {
        let want = self.cfg.frame as i64 + (3.0 * self.jitter).round() as i64;
        want.clamp(
            self.samples_of_ms(self.cfg.min_delay_ms),
            self.samples_of_ms(self.cfg.max_delay_ms),
        )
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.lost = self.lost_before + self.lost_this_ssrc();
        s
    }

    fn lost_this_ssrc(&self) -> u64 {
        match self.seq.highest() {
            Some(h) => (h + 1 - self.first_seq).saturating_sub(self.received_this_ssrc),
            None => 0,
        }
    }

    /// The stream being received, for RTCP reception reports.
    pub fn source(&self) -> Option<SourceState> {
        let highest = self.seq.highest()?;
        Some(SourceState {
            ssrc: self.ssrc?,
            highest_seq: highest,
            expected: highest + 1 - self.first_seq,
            received: self.received_this_ssrc,
            jitter: self.jitter.round() as u32,
        })
    }

    /// Audio buffered ahead of the playout point, in samples.
    pub fn depth(&self) -> i64 {
        let Some(play) = self.play_ts else { return 0 };
        self.slots
            .iter()
            .filter(|s| s.used)
            .map(|s| i64::from(ts_diff(s.ts, play)) + s.len as i64)
            .max()
            .unwrap_or(0)
            .max(0)
    }

    fn is_empty(&self) -> bool {
        !self.slots.iter().any(|s| s.used)
    }

    fn clear(&mut self) {
        for s in &mut self.slots {
            s.used = false;
        }
    }

    fn reset_stream(&mut self, ssrc: u32) {
        self.lost_before += self.lost_this_ssrc();
        self.ssrc = Some(ssrc);
        self.seq.reset();
        self.seen_bits = 0;
        self.seen_top = 0;
        self.received_this_ssrc = 0;
        self.last_transit = None;
        self.playing = false;
        self.play_ts = None;
        self.clear();
    }

    /// Marks `ext` as seen; false if it already was (or is too old to tell: also refused).
    fn first_sighting(&mut self, ext: u64) -> Option<bool> {
        if self.received_this_ssrc == 0 {
            self.seen_top = ext;
            self.seen_bits = 1;
            return Some(true);
        }
        if ext > self.seen_top {
            let shift = ext - self.seen_top;
            self.seen_bits = if shift >= 128 {
                0
            } else {
                self.seen_bits << shift
            };
            self.seen_top = ext;
            self.seen_bits |= 1;
            return Some(true);
        }
        let back = self.seen_top - ext;
        if back >= 128 {
            return None;
        }
        let bit = 1u128 << back;
        let fresh = self.seen_bits & bit == 0;
        self.seen_bits |= bit;
        Some(fresh)
    }

    /// Takes a received packet.
    pub fn insert(&mut self, a: Arrival, payload: Payload<'_>) -> Inserted {
        let len = match payload {
            Payload::Audio(s) if s.is_empty() || s.len() > MAX_PACKET => return Inserted::Unusable,
            Payload::Audio(s) => s.len(),
            Payload::ComfortNoise(_) | Payload::NoAudio => self.cfg.frame,
        };
        if self.ssrc != Some(a.ssrc) {
            if self.ssrc.is_some() {
                self.stats.ssrc_changes += 1;
            }
            self.reset_stream(a.ssrc);
        }
        let ext = self.seq.extend(a.sequence);
        let fresh = self.first_sighting(ext);
        if self.received_this_ssrc == 0 {
            self.first_seq = ext;
        }
        match fresh {
            Some(true) => {}
            Some(false) => {
                self.stats.duplicates += 1;
                return Inserted::Duplicate;
            }
            None => {
                self.stats.late += 1;
                return Inserted::Late;
            }
        }
        self.received_this_ssrc += 1;
        self.stats.received += 1;
        if ext < self.first_seq {
            self.first_seq = ext;
        }
        if payload == Payload::NoAudio {
            return Inserted::Queued;
        }

        // RFC 3550 §6.4.1: J += (|D| - J) / 16, D the change in transit time.
        let transit = a.arrival as i64 - i64::from(a.timestamp);
        if let Some(prev) = self.last_transit {
            // Timestamps wrap: take the transit difference modulo 2^32, signed.
            let d = (transit - prev) as i32;
            let d = f64::from(d).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        self.stats.jitter_ms = self.ms(self.jitter.round() as i64);
        self.stats.target_ms = self.ms(self.target());

        let one_second = i64::from(self.cfg.clock_rate);
        match self.play_ts {
            None => self.play_ts = Some(a.timestamp),
            Some(play) => {
                let d = i64::from(ts_diff(a.timestamp, play));
                let newest = Some(ext) == self.seq.highest();
                let jump = d.abs() > one_second && newest;
                let new_spurt = !self.playing && self.is_empty() && d > 0;
                if jump || (new_spurt && (a.marker || d >= self.cfg.frame as i64)) {
                    self.clear();
                    self.playing = false;
                    self.play_ts = Some(a.timestamp);
                    self.stats.resyncs += 1;
                } else if d + len as i64 <= 0 {
                    self.stats.late += 1;
                    return Inserted::Late;
                }
            }
        }

        let slot = match self.slots.iter().position(|s| !s.used) {
            Some(i) => i,
            None => {
                // Full: give up the oldest (the playout point has fallen far behind).
                let play = self.play_ts.unwrap_or(a.timestamp);
                let (i, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| ts_diff(s.ts, play))
                    .expect("slots exist");
                self.stats.skipped += 1;
                i
            }
        };
        let s = &mut self.slots[slot];
        s.used = true;
        s.ts = a.timestamp;
        s.len = len;
        match payload {
            Payload::Audio(x) => {
                s.samples[..len].copy_from_slice(x);
                s.noise = None;
            }
            Payload::ComfortNoise(level) => s.noise = Some(level),
            Payload::NoAudio => {}
        }
        Inserted::Queued
    }

    /// Produces the next frame into `out` (exactly `frame` samples); call once per frame
    /// period.
    pub fn pop(&mut self, out: &mut [f32]) -> FrameKind {
        assert_eq!(out.len(), self.cfg.frame, "one frame per pop");
        let frame = self.cfg.frame as i64;
        let target = self.target();
        self.stats.target_ms = self.ms(target);
        let Some(mut play) = self.play_ts else {
            return self.fill(out);
        };
        let depth = self.depth();
        if !self.playing {
            if depth < target || self.is_empty() {
                return self.fill(out);
            }
            self.playing = true;
            self.min_depth = i64::MAX;
            self.ticks = 0;
        }
        // Too much buffered (a burst after a stall): skip straight down to the target.
        let max = self.samples_of_ms(self.cfg.max_delay_ms);
        if depth > max + frame {
            let skip = ((depth - target) / frame) * frame;
            play = play.wrapping_add(skip as u32);
            self.stats.skipped += (skip / frame) as u64;
            self.drop_before(play);
        } else {
            self.min_depth = self.min_depth.min(depth);
            self.ticks += 1;
            if self.ticks >= SHRINK_WINDOW {
                if self.min_depth > target + frame {
                    play = play.wrapping_add(frame as u32);
                    self.stats.skipped += 1;
                    self.drop_before(play);
                }
                self.min_depth = i64::MAX;
                self.ticks = 0;
            }
        }
        self.play_ts = Some(play);

        out.fill(0.0);
        let (mut covered, mut noise) = (0usize, None);
        let end = play.wrapping_add(frame as u32);
        for s in self.slots.iter_mut().filter(|s| s.used) {
            let start = i64::from(ts_diff(s.ts, play));
            let from = start.max(0);
            let to = (start + s.len as i64).min(frame);
            if from < to {
                let (from, to) = (from as usize, to as usize);
                match s.noise {
                    Some(level) => noise = Some(level),
                    None => out[from..to]
                        .copy_from_slice(&s.samples[(from as i64 - start) as usize..][..to - from]),
                }
                covered += to - from;
            }
            if ts_diff(s.ts.wrapping_add(s.len as u32), end) <= 0 {
                s.used = false;
            }
        }
        if covered == 0 {
            let kind = self.conceal(out);
            if self.is_empty() {
                // Underrun: hold the playout point and buffer up again.
                self.playing = false;
            } else {
                self.play_ts = Some(end);
            }
            return kind;
        }
        self.play_ts = Some(end);
        if let Some(level) = noise {
            self.noise_level = Some(level);
            self.have_last = false;
            self.noise.fill(level, out);
            return FrameKind::ComfortNoise;
        }
        self.noise_level = None;
        self.last_frame.copy_from_slice(out);
        self.have_last = true;
        self.fade = 0;
        FrameKind::Audio
    }

    fn drop_before(&mut self, play: u32) {
        for s in &mut self.slots {
            if s.used && ts_diff(s.ts.wrapping_add(s.len as u32), play) <= 0 {
                s.used = false;
            }
        }
    }

    /// A frame when nothing may play yet: the rest of a fade, then noise or silence.
    fn fill(&mut self, out: &mut [f32]) -> FrameKind {
        if self.have_last && self.fade > 0 && self.fade < FADE_FRAMES {
            return self.conceal(out);
        }
        self.background(out)
    }

    fn background(&mut self, out: &mut [f32]) -> FrameKind {
        match self.noise_level {
            Some(level) => {
                self.noise.fill(level, out);
                FrameKind::ComfortNoise
            }
            None => {
                out.fill(0.0);
                FrameKind::Silence
            }
        }
    }

    /// Repeat-and-fade of the last good frame, then background.
    fn conceal(&mut self, out: &mut [f32]) -> FrameKind {
        if !self.have_last || self.fade >= FADE_FRAMES {
            self.fade = self.fade.saturating_add(1);
            return self.background(out);
        }
        let n = out.len() as f32;
        let total = FADE_FRAMES as f32 * n;
        let done = self.fade as f32 * n;
        for (i, (o, &x)) in out.iter_mut().zip(self.last_frame.iter()).enumerate() {
            *o = x * (1.0 - (done + i as f32) / total);
        }
        self.fade += 1;
        self.stats.concealed += 1;
        FrameKind::Concealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the network delivers (any sequence numbers, timestamps, sizes, SSRCs and
        /// order), the buffer never panics, always yields a frame, and keeps its target within
        /// bounds.
        #[test]
        fn arbitrary_arrivals_never_break_it(
            ops in proptest::collection::vec(
                (any::<bool>(), any::<u16>(), any::<u32>(), 0usize..=MAX_PACKET + 2, 0u8..3, any::<bool>()),
                0..300,
            )
        ) {
            let mut jb = JitterBuffer::new(JitterConfig::default());
            let mut out = [0f32; 160];
            let samples = [0.25f32; MAX_PACKET + 2];
            let mut clock = 0u64;
            for (pop, seq, ts, len, ssrc, marker) in ops {
                clock += 80;
                if pop {
                    jb.pop(&mut out);
                    prop_assert!(out.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
                } else {
                    let a = Arrival { sequence: seq, timestamp: ts, marker, ssrc: u32::from(ssrc), arrival: clock };
                    let p = if len == MAX_PACKET + 2 { Payload::ComfortNoise(ssrc) } else { Payload::Audio(&samples[..len]) };
                    jb.insert(a, p);
                }
                let s = jb.stats();
                prop_assert!((20.0..=200.0).contains(&s.target_ms));
            }
        }
    }

    fn arrival(seq: u16, ts: u32, at: u64) -> Arrival {
        Arrival {
            sequence: seq,
            timestamp: ts,
            marker: false,
            ssrc: 7,
            arrival: at,
        }
    }

    fn frame_of(k: u32) -> Vec<f32> {
        vec![(k % 1000) as f32 / 1000.0 + 0.0005; 160]
    }

    #[test]
    fn a_steady_stream_plays_in_order_after_the_minimum_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0f32; 160];
        let mut played = Vec::new();
        for k in 0..20u32 {
            jb.insert(
                arrival(k as u16, k * 160, u64::from(k) * 160),
                Payload::Audio(&frame_of(k)),
            );
            if jb.pop(&mut out) == FrameKind::Audio {
                played.push(out[0]);
            }
        }
        let want: Vec<f32> = (0..played.len() as u32).map(|k| frame_of(k)[0]).collect();
        assert_eq!(played, want);
        assert!(
            played.len() >= 18,
            "buffered one frame at most: {}",
            played.len()
        );
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.duplicates, s.concealed), (0, 0, 0, 0));
        assert_eq!(s.target_ms, 20.0);
    }

    #[test]
    fn reordered_and_duplicated_packets_play_once_in_order() {
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay_ms: 60,
            ..Default::default()
        });
        let order = [0u32, 2, 1, 1, 3, 5, 4, 4, 6, 7, 8, 9];
        for (i, &k) in order.iter().enumerate() {
            let r = jb.insert(
                arrival(k as u16, k * 160, i as u64 * 160),
                Payload::Audio(&frame_of(k)),
            );
            assert_eq!(r == Inserted::Duplicate, i == 3 || i == 7, "packet {i}");
        }
        let mut out = [0f32; 160];
        let mut played = Vec::new();
        for _ in 0..10 {
            assert_eq!(jb.pop(&mut out), FrameKind::Audio);
            played.push(out[0]);
        }
        assert_eq!(played, (0..10).map(|k| frame_of(k)[0]).collect::<Vec<_>>());
        assert_eq!(jb.stats().duplicates, 2);
    }

    #[test]
    fn a_lost_packet_is_concealed_by_a_fading_repeat_then_silence() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0f32; 160];
        let one = vec![0.5f32; 160];
        jb.insert(arrival(0, 0, 0), Payload::Audio(&one));
        assert_eq!(jb.pop(&mut out), FrameKind::Audio);
        // Packet 1 is lost, packet 2 waits: frame 1 is a repeat that fades.
        jb.insert(arrival(2, 320, 320), Payload::Audio(&one));
        assert_eq!(jb.pop(&mut out), FrameKind::Concealed);
        assert!((out[0] - 0.5).abs() < 1e-6 && out[159] < out[0] && out[159] > 0.3);
        assert_eq!(jb.pop(&mut out), FrameKind::Audio);
        assert_eq!(jb.stats().lost, 1);
        // The stream stops: three fading frames, then silence.
        let mut levels = Vec::new();
        for _ in 0..5 {
            let kind = jb.pop(&mut out);
            levels.push((kind, out.iter().map(|v| v.abs()).fold(0.0f32, f32::max)));
        }
        assert_eq!(levels[0].0, FrameKind::Concealed);
        assert!(levels[0].1 > levels[1].1 && levels[1].1 > levels[2].1 && levels[2].1 > 0.0);
        assert_eq!(levels[3], (FrameKind::Silence, 0.0));
        assert_eq!(levels[4], (FrameKind::Silence, 0.0));
    }

    #[test]
    fn comfort_noise_fills_the_silence_at_the_announced_level() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0f32; 160];
        jb.insert(arrival(0, 0, 0), Payload::Audio(&frame_of(1)));
        jb.pop(&mut out);
        jb.insert(arrival(1, 160, 160), Payload::ComfortNoise(30));
        assert_eq!(jb.pop(&mut out), FrameKind::ComfortNoise);
        // Nothing more arrives (DTX): noise continues at -30 dBov.
        let mut energy = 0.0;
        for _ in 0..50 {
            assert_eq!(jb.pop(&mut out), FrameKind::ComfortNoise);
            energy += out.iter().map(|v| v * v).sum::<f32>();
        }
        let db = -10.0 * (energy / (50.0 * 160.0)).log10();
        assert!((db - 30.0).abs() < 1.0, "{db} dBov");
        // Speech resumes with a marker 2 s later: it plays after the buffering delay.
        let mut a = arrival(2, 160 * 100, 160 * 100);
        a.marker = true;
        jb.insert(a, Payload::Audio(&frame_of(9)));
        assert_eq!(jb.pop(&mut out), FrameKind::Audio);
        assert_eq!(out[0], frame_of(9)[0]);
        assert_eq!(jb.stats().resyncs, 1);
    }

    #[test]
    fn a_new_ssrc_resets_the_stream_and_plays_its_audio() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0f32; 160];
        for k in 0..3u32 {
            jb.insert(
                arrival(k as u16, k * 160, u64::from(k) * 160),
                Payload::Audio(&frame_of(k)),
            );
            jb.pop(&mut out);
        }
        let mut b = arrival(40_000, 3_000_000, 480);
        b.ssrc = 99;
        jb.insert(b, Payload::Audio(&frame_of(77)));
        assert_eq!(jb.pop(&mut out), FrameKind::Audio);
        assert_eq!(out[0], frame_of(77)[0]);
        let s = jb.stats();
        assert_eq!((s.ssrc_changes, s.lost, s.late), (1, 0, 0));
    }

    #[test]
    fn a_late_packet_is_dropped_and_counted() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut out = [0f32; 160];
        jb.insert(arrival(0, 0, 0), Payload::Audio(&frame_of(0)));
        jb.pop(&mut out);
        jb.insert(arrival(2, 320, 320), Payload::Audio(&frame_of(2)));
        assert_eq!(jb.pop(&mut out), FrameKind::Concealed);
        assert_eq!(
            jb.insert(arrival(1, 160, 400), Payload::Audio(&frame_of(1))),
            Inserted::Late
        );
        assert_eq!(
            jb.insert(arrival(1, 160, 410), Payload::Audio(&frame_of(1))),
            Inserted::Duplicate
        );
        let s = jb.stats();
        assert_eq!((s.late, s.duplicates, s.lost), (1, 1, 0));
        assert_eq!(
            jb.insert(arrival(3, 480, 480), Payload::Audio(&[0.0; MAX_PACKET + 1])),
            Inserted::Unusable
        );
    }
}
