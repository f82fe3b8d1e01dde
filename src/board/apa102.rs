//! The agent's status on a chain of APA102 RGB LEDs (the ReSpeaker HATs' ring): colour says
//! which state, the [`Indicator`]'s pattern says it over time.
//!
//! The frame is written here rather than through a driver crate: it is a few bytes, and
//! building it in a buffer made once lets every tick go out as one SPI write without allocating.
//!
//! APA102 frame: a start frame of 32 zero bits; per LED `0b111bbbbb` (5-bit global brightness)
//! then blue, green, red; an end frame that clocks the data through the chain (each LED delays
//! it by half a clock, so at least `count / 2` more bits). The end frame is zeros, as SK9822
//! clones need and as LEDs beyond the chain read as the next start frame.

use std::time::Instant;

use embedded_hal::spi::SpiBus;

use super::indicator::{Indicator, Schedule, StatusLight};

/// One LED's colour, 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgb {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

impl Rgb {
    /// Dark: how LEDs look in [`Indicator::Idle`] and between blinks.
    pub const OFF: Self = Self::new(0, 0, 0);

    /// A colour from its red, green and blue.
    pub const fn new(r: u8, g: u8, b: u8) -> Self {
        Self { r, g, b }
    }
}

impl Indicator {
    /// The colour RGB LEDs take for this state: blue to talk, amber to wait, green while
    /// speaking, red for trouble (the conventions of smart speakers and traffic lights).
    pub const fn colour(self) -> Rgb {
        match self {
            Self::Idle => Rgb::OFF,
            Self::Listening => Rgb::new(0, 0, 255),
            Self::Thinking => Rgb::new(255, 120, 0),
            Self::Speaking => Rgb::new(0, 255, 0),
            Self::Error => Rgb::new(255, 0, 0),
        }
    }
}

/// Bytes in the start frame (32 zero bits).
const START_LEN: usize = 4;
/// Bytes per LED: brightness header, blue, green, red.
const LED_LEN: usize = 4;
/// The top three bits every LED frame's first byte carries.
const LED_HEADER: u8 = 0b1110_0000;
/// The highest 5-bit global brightness.
pub const MAX_BRIGHTNESS: u8 = 31;

/// Bytes in the end frame for `count` LEDs: `count / 2` bits rounded up to bytes, and never
/// fewer than 32 bits, the datasheet's end frame.
const fn end_len(count: usize) -> usize {
    let bytes = count.div_ceil(16);
    if bytes > 4 {
        bytes
    } else {
        4
    }
}

/// The length of a whole frame for `count` LEDs.
pub const fn frame_len(count: usize) -> usize {
    START_LEN + LED_LEN * count + end_len(count)
}

/// Fills `frame` (exactly [`frame_len`] bytes for its LED count) with every LED set to
/// `colour` at `brightness` (0..=31, higher values are capped).
///
/// # Panics
/// If `frame` is not a whole frame's length for `count` LEDs.
pub fn encode(frame: &mut [u8], count: usize, colour: Rgb, brightness: u8) {
    assert_eq!(frame.len(), frame_len(count), "APA102 frame length");
    let header = LED_HEADER | brightness.min(MAX_BRIGHTNESS);
    let (start, rest) = frame.split_at_mut(START_LEN);
    let (leds, end) = rest.split_at_mut(LED_LEN * count);
    start.fill(0);
    for led in leds.chunks_exact_mut(LED_LEN) {
        led.copy_from_slice(&[header, colour.b, colour.g, colour.r]);
    }
    end.fill(0);
}

/// A chain of APA102 LEDs, all showing the agent's status in one colour.
///
/// Until the first `show` it shows [`Indicator::Idle`]; the first `tick` or `show` writes a
/// frame, so LEDs left lit by a previous run go dark.
pub struct Apa102Indicator<B> {
    bus: B,
    count: usize,
    brightness: u8,
    schedule: Schedule,
    /// The frame buffer, sized once for the chain.
    frame: Vec<u8>,
    /// The colour last written; `None` before the first write or after a failed one, so the
    /// next tick writes again.
    shown: Option<Rgb>,
}

impl<B: SpiBus<u8>> Apa102Indicator<B> {
    /// Drives `count` LEDs on `bus` at `brightness` (0..=31, higher is capped). The bus must be
    /// configured already (mode 0, a few MHz); nothing is written yet.
    pub fn new(bus: B, count: usize, brightness: u8) -> Self {
        Self {
            bus,
            count,
            brightness: brightness.min(MAX_BRIGHTNESS),
            schedule: Schedule::default(),
            frame: vec![0; frame_len(count)],
            shown: None,
        }
    }

    /// Gives the bus back (to close the spidev, or to check a mock).
    pub fn release(self) -> B {
        self.bus
    }

    fn write(&mut self, colour: Rgb) -> Result<(), B::Error> {
        if self.shown == Some(colour) {
            return Ok(());
        }
        self.shown = None;
        encode(&mut self.frame, self.count, colour, self.brightness);
        self.bus.write(&self.frame)?;
        self.shown = Some(colour);
        Ok(())
    }
}

impl<B: SpiBus<u8>> StatusLight for Apa102Indicator<B> {
    type Error = B::Error;

    fn show(&mut self, indicator: Indicator, now: Instant) -> Result<(), B::Error> {
        self.schedule.show(indicator, now);
        self.tick(now)
    }

    fn tick(&mut self, now: Instant) -> Result<(), B::Error> {
        let colour = if self.schedule.is_lit(now) {
            self.schedule.indicator().colour()
        } else {
            Rgb::OFF
        };
        self.write(colour)
    }

    fn indicator(&self) -> Indicator {
        self.schedule.indicator()
    }
}
