//! The front end on a live stream: its own thread between a capture ring and a session.
//!
//! Inference (Silero every 32 ms, Smart Turn at each pause: 40–200 ms) runs here, never on the
//! async runtime and never on the capture thread, so a slow model delays only the front end,
//! which catches up from the ring. Audio moves in 10 ms frames, the unit of the echo
//! canceller, and nothing is allocated per frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::echo::{EchoCanceller, EchoOptions};
use super::{FrontEnd, ListenError, ListenEvent, Models, SAMPLE_RATE};
use crate::audio::ring::{self, Wake};
use crate::config::ListenConfig;

/// 10 ms at the front end's rate.
pub const FRAME: usize = SAMPLE_RATE as usize / 100;

/// Where the front end's results go (the session's input, a console, LEDs). Called on the
/// front end's thread: must not block.
pub trait Listener: Send {
    /// 10 ms of the user's audio at 16 kHz, as speech-to-text should hear it.
    fn audio(&mut self, frame: &[f32]);
    /// A VAD or turn-detector event.
    fn event(&mut self, event: &ListenEvent);
}

/// What the front end reads.
pub struct LiveInput {
    /// Microphone audio, mono at 16 kHz.
    pub mic: rtrb::Consumer<f32>,
    /// Unparked when microphone audio arrives.
    pub wake: Arc<Wake>,
    /// Cleared while the microphone is muted (a mute or push-to-talk button): the front end
    /// and the session then hear silence, so a turn in progress ends as if the user stopped.
    pub open: Arc<AtomicBool>,
    /// What the speaker played (mono, 16 kHz), sample for sample as it went to the device:
    /// the echo canceller's far-end reference. `None` (or `[listen.echo] enabled = false`): no
    /// echo cancellation (a headset, a phone line).
    pub played: Option<rtrb::Consumer<f32>>,
}

/// A far-end sample below this is silence (the speaker plays exact zeros when idle).
const SILENT: f32 = 1e-4;
/// After this long without far-end sound (1 s: the speaker's buffering plus a room's echo tail,
/// with margin) there is no echo left to cancel, and the canceller rests: it is a fifth of the
/// idle kiosk's CPU. It resumes with the first played frame, which reaches the canceller before
/// its echo reaches the microphone.
const ECHO_TAIL_FRAMES: usize = 100;

/// The far-end reference may lead the microphone by the speaker's buffering (the playback
/// thread hands audio to the device ahead of its sound) plus the room, which the canceller's
/// delay estimator finds; beyond this much the reference is stale (the front end stalled while
/// the speaker played on) and is dropped down to the microphone's own backlog.
const MAX_LEAD: usize = SAMPLE_RATE as usize / 2;

/// Keeps the far end in lockstep with the microphone: both rings fill in real time from one
/// card, so popping one frame from each per step keeps their offset constant. Samples are
/// dropped only when the reference has piled up past [`MAX_LEAD`]; trimming on every frame
/// would throw away the playback thread's bursts and leave the canceller mostly silence.
fn align(played: &mut rtrb::Consumer<f32>, mic_backlog: usize) {
    let excess = played.slots().saturating_sub(mic_backlog + MAX_LEAD);
    if excess > 0 {
        if let Ok(chunk) = played.read_chunk(played.slots() - mic_backlog - FRAME) {
            chunk.commit_all();
        }
    }
}

/// The running front end; [`Live::stop`] ends it.
pub struct Live {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Models, ListenError>>>,
}

impl Live {
    /// Starts the front end thread with `models` (moved in: the thread owns them).
    pub fn spawn(
        config: ListenConfig,
        mut models: Models,
        mut input: LiveInput,
        mut listener: Box<dyn Listener>,
    ) -> Result<Live, ListenError> {
        let echo = match (config.echo.enabled, &input.played) {
            (true, Some(_)) => Some(EchoCanceller::new(&EchoOptions::from_config(
                &config.echo,
                SAMPLE_RATE,
            ))?),
            _ => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hark-listen".into())
            .spawn(move || {
                input.wake.register();
                let mut front = FrontEnd::new(&config, &mut models, SAMPLE_RATE)?;
                let mut echo = echo.zip(input.played.take());
                let mut frame = [0.0f32; FRAME];
                let mut far = [0.0f32; FRAME];
                // Frames since the speaker last played anything. The canceller rests in long
                // silences only when it cancels echo alone (its noise suppressor and AGC, if
                // enabled, must see every frame).
                let mut quiet = 0usize;
                let may_rest = !config.echo.noise_suppression && !config.echo.agc;
                let mut events = Vec::with_capacity(8);
                while !flag.load(Ordering::Relaxed) {
                    if !ring::pop_exact(&mut input.mic, &mut frame) {
                        std::thread::park_timeout(Duration::from_millis(100));
                        continue;
                    }
                    if let Some((aec, played)) = echo.as_mut() {
                        align(played, input.mic.slots());
                        if !ring::pop_exact(played, &mut far) {
                            far.fill(0.0);
                        }
                        quiet = if far.iter().all(|s| s.abs() < SILENT) {
                            quiet + 1
                        } else {
                            0
                        };
                        // Render and capture stay paired, so skipping both keeps them in step.
                        if quiet < ECHO_TAIL_FRAMES || !may_rest {
                            aec.render(&far);
                            aec.capture(&mut frame);
                            let m = aec.metrics();
                            if m.frames % 1000 == 0 {
                                tracing::debug!(metrics = ?m, "echo canceller");
                            }
                        }
                    }
                    if !input.open.load(Ordering::Relaxed) {
                        frame.fill(0.0);
                    }
                    listener.audio(&frame);
                    front.push(&frame, &mut events)?;
                    for e in events.drain(..) {
                        listener.event(&e);
                    }
                }
                drop(front);
                Ok(models)
            })
            .map_err(ListenError::Thread)?;
        Ok(Live {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (a model failed, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the thread and returns how it ended: the models, for the next stream (a phone
    /// endpoint reuses them call after call), or the error that stopped it.
    pub fn stop(mut self) -> Result<Option<Models>, ListenError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                match t.join() {
                    Ok(ended) => ended.map(Some),
                    Err(_) => Ok(None),
                }
            }
            None => Ok(None),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}
