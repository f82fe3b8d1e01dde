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
}

/// The running front end; [`Live::stop`] ends it.
pub struct Live {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ListenError>>>,
}

impl Live {
    /// Starts the front end thread with `models` (moved in: the thread owns them).
    pub fn spawn(
        config: ListenConfig,
        mut models: Models,
        mut input: LiveInput,
        mut listener: Box<dyn Listener>,
    ) -> std::io::Result<Live> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hark-listen".into())
            .spawn(move || {
                input.wake.register();
                let mut front = FrontEnd::new(&config, &mut models, SAMPLE_RATE)?;
                let mut frame = [0.0f32; FRAME];
                let mut events = Vec::with_capacity(8);
                while !flag.load(Ordering::Relaxed) {
                    if !ring::pop_exact(&mut input.mic, &mut frame) {
                        std::thread::park_timeout(Duration::from_millis(100));
                        continue;
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
                Ok(())
            })?;
        Ok(Live {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (a model failed, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the thread and returns how it ended.
    pub fn stop(mut self) -> Result<(), ListenError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                t.join().unwrap_or(Ok(()))
            }
            None => Ok(()),
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
