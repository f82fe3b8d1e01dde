//! The agent's status on a light: what the person in front of the kiosk sees to know whether to
//! speak, wait, or call someone. One LED shows it by blink pattern, RGB LEDs ([`super::apa102`])
//! by colour and pattern.
//!
//! Drivers are clocked by the caller (`tick(now)`), never by sleeping, so a session loop can
//! drive them from its own timer and tests can step time exactly.

use std::time::{Duration, Instant};

use embedded_hal::digital::OutputPin;

use super::ActiveLevel;

/// What the agent is doing, as far as a person watching the light needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Indicator {
    /// Nothing going on: the light is dark, so a lit light always means something.
    #[default]
    Idle,
    /// The microphone is open and hark waits for speech: the cue to talk.
    Listening,
    /// The user's turn is over and the answer is being prepared: the cue to wait.
    Thinking,
    /// hark is talking (the user may still interrupt).
    Speaking,
    /// Something is wrong (no network, a provider down, no audio device): the cue to get help.
    Error,
}

/// How a light shows an [`Indicator`] over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Not lit.
    Dark,
    /// Lit without a break.
    Steady,
    /// Lit for `on`, dark for `off`, repeating, starting lit when the indicator is shown.
    Blink {
        /// How long each flash lasts.
        on: Duration,
        /// How long the gap between flashes lasts.
        off: Duration,
    },
}

impl Pattern {
    /// Whether the light is lit `elapsed` after the pattern started: a pure function of time,
    /// so the pattern's phase never drifts with how often it is ticked.
    pub fn is_lit(self, elapsed: Duration) -> bool {
        match self {
            Self::Dark => false,
            Self::Steady => true,
            Self::Blink { on, off } => {
                let period = (on + off).as_nanos();
                period == 0 || elapsed.as_nanos() % period < on.as_nanos()
            }
        }
    }
}

impl Indicator {
    /// The pattern a light shows for this state. A single LED tells states apart only by
    /// pattern: steady to talk, slow blink to wait, a steady light with a short beat while
    /// speaking, and a fast blink for trouble.
    pub const fn pattern(self) -> Pattern {
        const fn blink(on_ms: u64, off_ms: u64) -> Pattern {
            Pattern::Blink {
                on: Duration::from_millis(on_ms),
                off: Duration::from_millis(off_ms),
            }
        }
        match self {
            Self::Idle => Pattern::Dark,
            Self::Listening => Pattern::Steady,
            Self::Thinking => blink(500, 500),
            Self::Speaking => blink(800, 200),
            Self::Error => blink(100, 100),
        }
    }
}

/// A status light driven by the session: `show` on each state change, `tick` from a timer
/// (every 50 ms is plenty) so blink patterns advance. The trait lets the session hold whichever
/// light the board has.
pub trait StatusLight {
    /// The hardware's error (a failed pin write or SPI transfer).
    type Error;

    /// Switches to `indicator` and updates the light at once. Showing the indicator already
    /// shown keeps its pattern's phase, so callers may repeat it freely.
    fn show(&mut self, indicator: Indicator, now: Instant) -> Result<(), Self::Error>;

    /// Advances the pattern to `now`, touching the hardware only when what is shown changes.
    fn tick(&mut self, now: Instant) -> Result<(), Self::Error>;

    /// The indicator being shown.
    fn indicator(&self) -> Indicator;
}

/// Which indicator is shown and since when: the part of a light's state that patterns need.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Schedule {
    indicator: Indicator,
    since: Option<Instant>,
}

impl Schedule {
    /// Starts `indicator`'s pattern at `now`, unless it is already running.
    pub(crate) fn show(&mut self, indicator: Indicator, now: Instant) {
        if indicator != self.indicator || self.since.is_none() {
            self.indicator = indicator;
            self.since = Some(now);
        }
    }

    /// Whether the light is lit at `now`.
    pub(crate) fn is_lit(&self, now: Instant) -> bool {
        let elapsed = self
            .since
            .map(|since| now.saturating_duration_since(since))
            .unwrap_or_default();
        self.indicator.pattern().is_lit(elapsed)
    }

    pub(crate) fn indicator(&self) -> Indicator {
        self.indicator
    }
}

/// A single status LED on a GPIO output: the light every board can have.
///
/// Until the first `show` it shows [`Indicator::Idle`]; the first `tick` or `show` sets the
/// line, so a LED left lit by a previous run goes dark.
pub struct StatusLed<P> {
    pin: P,
    active: ActiveLevel,
    schedule: Schedule,
    /// Whether the LED is lit, as last written; `None` before the first write or after a
    /// failed one, so the next tick writes again.
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    /// Drives `pin`, lit at `active` level. Writes nothing yet.
    pub fn new(pin: P, active: ActiveLevel) -> Self {
        Self {
            pin,
            active,
            schedule: Schedule::default(),
            lit: None,
        }
    }

    /// Gives the pin back (to release the GPIO line, or to check a mock).
    pub fn release(self) -> P {
        self.pin
    }

    fn write(&mut self, lit: bool) -> Result<(), P::Error> {
        if self.lit == Some(lit) {
            return Ok(());
        }
        self.lit = None;
        if self.active.is_on(true) == lit {
            self.pin.set_high()?;
        } else {
            self.pin.set_low()?;
        }
        self.lit = Some(lit);
        Ok(())
    }
}

impl<P: OutputPin> StatusLight for StatusLed<P> {
    type Error = P::Error;

    fn show(&mut self, indicator: Indicator, now: Instant) -> Result<(), P::Error> {
        self.schedule.show(indicator, now);
        self.tick(now)
    }

    fn tick(&mut self, now: Instant) -> Result<(), P::Error> {
        let lit = self.schedule.is_lit(now);
        self.write(lit)
    }

    fn indicator(&self) -> Indicator {
        self.schedule.indicator()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blink_is_lit_for_on_then_dark_for_off_and_repeats() {
        let ms = Duration::from_millis;
        let blink = Pattern::Blink {
            on: ms(100),
            off: ms(300),
        };
        let lit: Vec<bool> = [0, 99, 100, 399, 400, 499, 500]
            .map(|t| blink.is_lit(ms(t)))
            .to_vec();
        assert_eq!(lit, [true, true, false, false, true, true, false]);
    }

    #[test]
    fn a_blink_of_zero_length_is_steady_rather_than_a_division_by_zero() {
        let zero = Pattern::Blink {
            on: Duration::ZERO,
            off: Duration::ZERO,
        };
        assert!(zero.is_lit(Duration::from_secs(3)));
    }

    #[test]
    fn every_state_but_idle_lights_at_its_start() {
        for indicator in [
            Indicator::Listening,
            Indicator::Thinking,
            Indicator::Speaking,
            Indicator::Error,
        ] {
            assert!(indicator.pattern().is_lit(Duration::ZERO), "{indicator:?}");
        }
        assert!(!Indicator::Idle.pattern().is_lit(Duration::ZERO));
    }
}
