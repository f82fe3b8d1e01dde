//! The two device threads: open, move periods, recover, reopen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alsa::pcm::{IO, PCM};
use alsa::Direction;

use super::device::{self, Negotiated, StreamRequest};
use super::{AudioStats, DirectionStats, Wake, PIPELINE_RATE};
use crate::audio::{ring, Resampler};

/// First retry after a device is lost; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one wait for the device may take before the stop flag is looked at again.
const WAIT_MS: u32 = 250;
/// A running device silent this long is treated as lost.
const STALL: Duration = Duration::from_secs(2);
/// Pipeline samples moved at a time on the playback side (10 ms).
const CHUNK: usize = PIPELINE_RATE as usize / 100;

/// One direction's work between the device and its ring.
pub(super) trait Stream {
    /// A device was (re)opened with these parameters: size the buffers (the only place that
    /// allocates).
    fn configure(&mut self, n: &Negotiated);
    /// Moves one period; returns the frames moved.
    fn step(&mut self, io: &IO<'_, u8>, n: &Negotiated) -> alsa::Result<usize>;
}

fn is_xrun(e: &alsa::Error) -> bool {
    matches!(e.errno(), libc::EPIPE | libc::ESTRPIPE | libc::EINTR)
}

/// Runs one direction until `stop`: opens the device (retrying with backoff), moves periods,
/// recovers xruns in place and reopens the device after any other failure.
pub(super) fn run(
    req: &StreamRequest,
    dir: Direction,
    stop: &AtomicBool,
    stats: &DirectionStats,
    stream: &mut dyn Stream,
) {
    let side = match dir {
        Direction::Capture => "capture",
        Direction::Playback => "playback",
    };
    let mut backoff = MIN_BACKOFF;
    let (mut ever_opened, mut reported) = (false, false);
    while !stop.load(Ordering::Relaxed) {
        let (pcm, n) = match device::open(req, dir) {
            Ok(opened) => opened,
            Err(e) => {
                if !reported {
                    tracing::warn!(error = %e, "audio {side} device unavailable; retrying");
                    reported = true;
                }
                std::thread::park_timeout(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if ever_opened {
            stats.reopens.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            device = %req.device,
            rate = n.rate,
            channels = n.channels,
            format = ?n.format,
            period = n.period,
            buffer = n.buffer,
            reopened = ever_opened,
            "audio {side} device open"
        );
        (ever_opened, reported, backoff) = (true, false, MIN_BACKOFF);
        stream.configure(&n);
        stats.up.store(true, Ordering::Relaxed);
        pump(&pcm, &n, dir, stop, stats, stream, side);
        // Down once closed, not before: whoever watches `up` may reopen the card at once.
        drop(pcm);
        stats.up.store(false, Ordering::Relaxed);
    }
}

/// Moves periods until the device fails for good or `stop`.
fn pump(
    pcm: &PCM,
    n: &Negotiated,
    dir: Direction,
    stop: &AtomicBool,
    stats: &DirectionStats,
    stream: &mut dyn Stream,
    side: &str,
) {
    let io = pcm.io_bytes();
    if dir == Direction::Capture {
        let _ = pcm.start();
    }
    let mut silent = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let result = match pcm.wait(Some(WAIT_MS)) {
            Ok(false) => {
                silent += Duration::from_millis(u64::from(WAIT_MS));
                if silent >= STALL {
                    tracing::warn!("audio {side} device stopped moving; reopening it");
                    return;
                }
                continue;
            }
            Ok(true) => stream.step(&io, n),
            Err(e) => Err(e),
        };
        match result {
            Ok(frames) => {
                silent = Duration::ZERO;
                stats.frames.fetch_add(frames as u64, Ordering::Relaxed);
            }
            Err(e) if is_xrun(&e) && pcm.try_recover(e, true).is_ok() => {
                stats.xruns.fetch_add(1, Ordering::Relaxed);
                if dir == Direction::Capture {
                    let _ = pcm.start();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "audio {side} device failed; reopening it");
                return;
            }
        }
    }
}

/// Device → mono → [`PIPELINE_RATE`] → the microphone ring.
pub(super) struct Capture {
    ring: rtrb::Producer<f32>,
    wake: Arc<Wake>,
    stats: Arc<AudioStats>,
    bytes: Vec<u8>,
    mono: Vec<f32>,
    out: Vec<f32>,
    resampler: Resampler,
}

impl Capture {
    pub(super) fn new(ring: rtrb::Producer<f32>, wake: Arc<Wake>, stats: Arc<AudioStats>) -> Self {
        Self {
            ring,
            wake,
            stats,
            bytes: Vec::new(),
            mono: Vec::new(),
            out: Vec::new(),
            resampler: Resampler::new(PIPELINE_RATE, PIPELINE_RATE),
        }
    }
}

impl Stream for Capture {
    fn configure(&mut self, n: &Negotiated) {
        self.bytes = vec![0; n.period * n.channels as usize * n.format.bytes()];
        self.mono = vec![0.0; n.period];
        self.out = Vec::with_capacity(n.period * PIPELINE_RATE as usize / n.rate as usize + 1024);
        self.resampler = Resampler::new(n.rate, PIPELINE_RATE);
    }

    fn step(&mut self, io: &IO<'_, u8>, n: &Negotiated) -> alsa::Result<usize> {
        let frames = io.readi(&mut self.bytes)?;
        let frame_bytes = n.channels as usize * n.format.bytes();
        let m = device::to_mono(
            &self.bytes[..frames * frame_bytes],
            n.format,
            n.channels as usize,
            &mut self.mono,
        );
        self.out.clear();
        self.resampler.process(&self.mono[..m], &mut self.out);
        let lost = ring::push_slice(&mut self.ring, &self.out);
        if lost > 0 {
            self.stats
                .capture
                .dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
        self.wake.wake();
        Ok(frames)
    }
}

/// The speaker ring → [`PIPELINE_RATE`] → device; silence while there is nothing to say.
pub(super) struct Playback {
    ring: rtrb::Consumer<f32>,
    played: rtrb::Producer<f32>,
    prefill: usize,
    primed: bool,
    chunk: [f32; CHUNK],
    pending: Vec<f32>,
    bytes: Vec<u8>,
    resampler: Resampler,
}

impl Playback {
    pub(super) fn new(
        ring: rtrb::Consumer<f32>,
        played: rtrb::Producer<f32>,
        prefill: usize,
    ) -> Self {
        Self {
            ring,
            played,
            prefill: prefill.max(CHUNK),
            primed: false,
            chunk: [0.0; CHUNK],
            pending: Vec::new(),
            bytes: Vec::new(),
            resampler: Resampler::new(PIPELINE_RATE, PIPELINE_RATE),
        }
    }

    /// The next 10 ms of speech, or silence: playback starts once `prefill` is queued (so the
    /// session's clock jitter does not chop words) and stops when the queue runs dry.
    fn next_chunk(&mut self) {
        let queued = self.ring.slots();
        if !self.primed && queued >= self.prefill {
            self.primed = true;
        }
        let take = if self.primed { queued.min(CHUNK) } else { 0 };
        if take < CHUNK {
            self.primed = false;
        }
        if let Ok(read) = self.ring.read_chunk(take) {
            let (a, b) = read.as_slices();
            self.chunk[..a.len()].copy_from_slice(a);
            self.chunk[a.len()..take].copy_from_slice(b);
            read.commit_all();
        }
        self.chunk[take..].fill(0.0);
        // The echo canceller's reference; with nobody reading it (no AEC) it just fills.
        ring::push_slice(&mut self.played, &self.chunk);
    }
}

impl Stream for Playback {
    fn configure(&mut self, n: &Negotiated) {
        let period_pipeline = n.period * PIPELINE_RATE as usize / n.rate as usize;
        self.pending = Vec::with_capacity(n.period * 2 + (CHUNK + period_pipeline) * 8);
        self.bytes = vec![0; n.period * n.channels as usize * n.format.bytes()];
        self.resampler = Resampler::new(PIPELINE_RATE, n.rate);
    }

    fn step(&mut self, io: &IO<'_, u8>, n: &Negotiated) -> alsa::Result<usize> {
        while self.pending.len() < n.period {
            self.next_chunk();
            self.resampler.process(&self.chunk, &mut self.pending);
        }
        let frames = device::from_mono(
            &self.pending[..n.period],
            n.format,
            n.channels as usize,
            &mut self.bytes,
        );
        let written = io.writei(&self.bytes[..frames * n.channels as usize * n.format.bytes()])?;
        self.pending.drain(..written);
        Ok(written)
    }
}
