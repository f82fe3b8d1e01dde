//! The kiosk's own microphone and speaker, through ALSA.
//!
//! Capture and playback each run on a dedicated thread that does nothing but move samples
//! between the sound card and a lock-free ring ([`rtrb`]), so neither the network nor a slow
//! model can make the card overrun. At that edge samples are converted once: whatever the card
//! granted (rate, channels, S16/S32/float) to mono `f32` at [`PIPELINE_RATE`] and back.
//!
//! A device that fails is reopened: an xrun is recovered in place (`snd_pcm_recover`) and
//! counted; anything worse (a USB card unplugged) closes it and retries with backoff while the
//! rest of hark keeps running, so the card comes back by itself when it is plugged in again.

pub mod device;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use alsa::Direction;

pub use crate::audio::ring::Wake;
pub use device::{DeviceError, DeviceInfo, Negotiated, SampleFormat, StreamRequest};

/// The rate of the audio hark hands to the front end and takes from the session: 16 kHz, the
/// VAD's and the echo canceller's rate, so nothing between them resamples.
pub const PIPELINE_RATE: u32 = 16_000;

/// Samples the microphone ring holds: 2 s, so a slow inference (tract's Smart Turn) never
/// loses audio.
const MIC_RING: usize = PIPELINE_RATE as usize * 2;
/// Samples the speaker ring holds: 1 s of queued reply.
const SPEAKER_RING: usize = PIPELINE_RATE as usize;

/// The two devices and how to drive them (`[audio]` in hark.toml, with the board's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAudioConfig {
    /// The microphone.
    pub capture: StreamRequest,
    /// The speaker.
    pub playback: StreamRequest,
    /// Speech queued before the speaker starts playing it (absorbs the session's clock jitter).
    pub prefill: Duration,
}

/// Counters of one direction, readable at any time (metrics, `hark console`).
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Overruns (capture) or underruns (playback) recovered in place.
    pub xruns: AtomicU64,
    /// Times the device was lost and opened again.
    pub reopens: AtomicU64,
    /// Samples lost because the ring was full (capture: the front end fell 2 s behind;
    /// playback: the session queued more than the ring holds).
    pub dropped: AtomicU64,
    /// Frames moved to or from the device.
    pub frames: AtomicU64,
    /// Whether the device is open and running now.
    pub up: AtomicBool,
}

/// Both directions' counters.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// The microphone.
    pub capture: DirectionStats,
    /// The speaker.
    pub playback: DirectionStats,
}

/// The consumer ends of the running devices.
pub struct LocalStreams {
    /// Microphone audio: mono, [`PIPELINE_RATE`].
    pub mic: rtrb::Consumer<f32>,
    /// Unparked whenever microphone audio arrives (register the consuming thread).
    pub mic_wake: Arc<Wake>,
    /// What the speaker played, sample for sample as it went to the device: the echo
    /// canceller's far-end reference. Mono, [`PIPELINE_RATE`].
    pub played: rtrb::Consumer<f32>,
    /// Where the session's voice goes.
    pub speaker: Speaker,
}

/// The playback side as the session sees it: a non-blocking [`crate::session::AudioSink`].
pub struct Speaker {
    ring: rtrb::Producer<f32>,
    stats: Arc<AudioStats>,
    rate: u32,
    resampler: crate::audio::Resampler,
    scratch: Vec<f32>,
}

impl Speaker {
    /// Queues mono samples at [`PIPELINE_RATE`]; what does not fit is dropped and counted.
    pub fn push(&mut self, samples: &[f32]) {
        let lost = crate::audio::ring::push_slice(&mut self.ring, samples);
        if lost > 0 {
            self.stats
                .playback
                .dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
    }

    /// The sink for a session whose output is at `rate` (resampled here to the pipeline's).
    pub fn at_rate(mut self, rate: u32) -> Speaker {
        self.rate = rate;
        self.resampler = crate::audio::Resampler::new(rate, PIPELINE_RATE);
        self
    }
}

impl crate::session::AudioSink for Speaker {
    fn write(&mut self, frame: &[f32]) {
        if self.rate == PIPELINE_RATE {
            self.push(frame);
            return;
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.resampler.process(frame, &mut out);
        self.push(&out);
        self.scratch = out;
    }
}

/// The running devices. Dropping it stops both threads at their next wake-up and waits until
/// they have closed their devices (bounded; a thread blocked in the driver finishes its period
/// first).
pub struct LocalAudio {
    stop: Arc<AtomicBool>,
    stats: Arc<AudioStats>,
    threads: Vec<JoinHandle<()>>,
    /// Disconnected once both threads have ended.
    ended: std::sync::mpsc::Receiver<()>,
}

impl LocalAudio {
    /// Starts capture and playback. Devices that cannot be opened yet are retried in the
    /// background (a kiosk may boot before its USB card is ready); watch
    /// [`DirectionStats::up`] to know when they are.
    pub fn start(config: &LocalAudioConfig) -> std::io::Result<(LocalAudio, LocalStreams)> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AudioStats::default());
        let (mic_tx, mic_rx) = rtrb::RingBuffer::new(MIC_RING);
        let (speaker_tx, speaker_rx) = rtrb::RingBuffer::new(SPEAKER_RING);
        let (played_tx, played_rx) = rtrb::RingBuffer::new(MIC_RING);
        let mic_wake = Arc::new(Wake::default());
        let capture = stream::Capture::new(mic_tx, mic_wake.clone(), stats.clone());
        let playback = stream::Playback::new(
            speaker_rx,
            played_tx,
            (config.prefill.as_secs_f64() * PIPELINE_RATE as f64) as usize,
        );
        let jobs: [(
            &str,
            StreamRequest,
            Direction,
            Box<dyn stream::Stream + Send>,
        ); 2] = [
            (
                "hark-capture",
                config.capture.clone(),
                Direction::Capture,
                Box::new(capture),
            ),
            (
                "hark-playback",
                config.playback.clone(),
                Direction::Playback,
                Box::new(playback),
            ),
        ];
        let mut threads = Vec::with_capacity(2);
        let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
        for (name, req, dir, mut job) in jobs {
            let (stop, stats) = (stop.clone(), stats.clone());
            let ended = ended_tx.clone();
            threads.push(thread::Builder::new().name(name.into()).spawn(move || {
                // Dropped when the thread ends, which is what `LocalAudio::drop` waits for.
                let _ended = ended;
                block_async_signals();
                let own = match dir {
                    Direction::Capture => &stats.capture,
                    Direction::Playback => &stats.playback,
                };
                stream::run(&req, dir, &stop, own, job.as_mut());
            })?);
        }
        let speaker = Speaker {
            ring: speaker_tx,
            stats: stats.clone(),
            rate: PIPELINE_RATE,
            resampler: crate::audio::Resampler::new(PIPELINE_RATE, PIPELINE_RATE),
            scratch: Vec::with_capacity(4096),
        };
        Ok((
            LocalAudio {
                stop,
                stats,
                threads,
                ended,
            },
            LocalStreams {
                mic: mic_rx,
                mic_wake,
                played: played_rx,
                speaker,
            },
        ))
    }

    /// The devices' counters.
    pub fn stats(&self) -> &Arc<AudioStats> {
        &self.stats
    }
}

/// Keeps process-wide signals (a child's SIGCHLD, SIGTERM, ...) off a device thread, so the
/// kernel delivers them to another thread. A signal landing in a blocked `write` to a FIFO
/// makes it return short, and alsa-lib's `file` plugin then aborts the whole process on its
/// next drop (`pcm_file.c`: `assert(file->wbuf_used_bytes == 0)`); real drivers gain
/// nothing from being interrupted either.
fn block_async_signals() {
    // SAFETY: plain libc calls on a local, initialised signal set, for this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        // A fault raised by this thread's own code must still reach its handler.
        for sync in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
        ] {
            libc::sigdelset(&mut set, sync);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl Drop for LocalAudio {
    /// Stops both threads and waits (up to [`CLOSE_WAIT`]) until they have closed their
    /// devices: whoever opens the card next, or reads what was played, finds it released. A
    /// device that will not close in time (a driver stuck in a write) is left to its thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.threads {
            t.thread().unpark();
        }
        // Disconnected when every thread's sender is gone: no polling.
        let _ = self.ended.recv_timeout(CLOSE_WAIT);
        for t in std::mem::take(&mut self.threads) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// How long dropping [`LocalAudio`] waits for the devices to close: a device thread notices
/// `stop` within one 250 ms wait.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
