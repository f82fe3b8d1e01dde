//! The board's push button: debounced presses and releases, and what they do to the
//! microphone (push-to-talk or mute).
//!
//! The button is polled with the caller's clock rather than waited on with interrupts: a poll
//! every 5–10 ms costs nothing, works with every HAL, and lets tests step time exactly.

use std::time::{Duration, Instant};

use embedded_hal::digital::InputPin;

use super::profile::ButtonAction;
use super::ActiveLevel;

/// A debounced change of the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// The button went down (and stayed down for the debounce time).
    Pressed,
    /// The button came up (and stayed up for the debounce time).
    Released,
}

/// A push button on a GPIO input, debounced: a new level counts only once every poll has read
/// it for at least the debounce time, so contact bounce and glitches make no events.
pub struct Button<P> {
    pin: P,
    active: ActiveLevel,
    debounce: Duration,
    /// The debounced state.
    pressed: bool,
    /// Since when the line has read the other state without a break, if it does.
    changing_since: Option<Instant>,
}

impl<P: InputPin> Button<P> {
    /// Reads `pin`, pressed at `active` level; a level must hold for `debounce` to count.
    /// The button starts released: one held at start-up reports `Pressed` after `debounce`.
    pub fn new(pin: P, active: ActiveLevel, debounce: Duration) -> Self {
        Self {
            pin,
            active,
            debounce,
            pressed: false,
            changing_since: None,
        }
    }

    /// Reads the line once at `now` and reports a press or release when one has just become
    /// certain. Call it regularly, at intervals well below the debounce time.
    pub fn poll(&mut self, now: Instant) -> Result<Option<ButtonEvent>, P::Error> {
        let pressed = self.active.is_on(self.pin.is_high()?);
        if pressed == self.pressed {
            self.changing_since = None;
            return Ok(None);
        }
        let since = *self.changing_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.debounce {
            return Ok(None);
        }
        self.pressed = pressed;
        self.changing_since = None;
        Ok(Some(if pressed {
            ButtonEvent::Pressed
        } else {
            ButtonEvent::Released
        }))
    }

    /// Whether the button is down, as debounced.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// Gives the pin back (to release the GPIO line, or to check a mock).
    pub fn release(self) -> P {
        self.pin
    }
}

/// Whether the microphone is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicState {
    /// Capture reaches the session.
    Open,
    /// Capture is dropped (or replaced by silence) before the session.
    Closed,
}

/// Turns button events into the microphone's state, per the board's [`ButtonAction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicSwitch {
    action: ButtonAction,
    state: MicState,
}

impl MicSwitch {
    /// Starts as the action implies with the button up: closed for push-to-talk (nobody is
    /// holding it), open for mute (an always-listening kiosk until someone mutes it).
    pub fn new(action: ButtonAction) -> Self {
        let state = match action {
            ButtonAction::PushToTalk => MicState::Closed,
            ButtonAction::Mute => MicState::Open,
        };
        Self { action, state }
    }

    /// Applies a button event; returns the new state when it changed, so the caller acts only
    /// on changes. Push-to-talk opens on press and closes on release; mute toggles on each
    /// press and ignores releases.
    pub fn apply(&mut self, event: ButtonEvent) -> Option<MicState> {
        let next = match (self.action, event) {
            (ButtonAction::PushToTalk, ButtonEvent::Pressed) => MicState::Open,
            (ButtonAction::PushToTalk, ButtonEvent::Released) => MicState::Closed,
            (ButtonAction::Mute, ButtonEvent::Pressed) => match self.state {
                MicState::Open => MicState::Closed,
                MicState::Closed => MicState::Open,
            },
            (ButtonAction::Mute, ButtonEvent::Released) => self.state,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// The microphone's state now.
    pub fn state(&self) -> MicState {
        self.state
    }

    /// What the button does.
    pub fn action(&self) -> ButtonAction {
        self.action
    }
}
