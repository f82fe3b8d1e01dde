//! The real pins on Linux: a profile's status light and button opened through the GPIO
//! character device and spidev (`linux-embedded-hal`), ready for the portable drivers.
//!
//! The character device (not sysfs) because it is the interface current kernels keep, needs no
//! export step, and releases the lines when hark exits, however it exits.

use std::time::{Duration, Instant};

use linux_embedded_hal::gpio_cdev::{self, Chip, LineRequestFlags};
use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
use linux_embedded_hal::{CdevPin, CdevPinError, SPIError, SpidevBus};

use super::apa102::Apa102Indicator;
use super::button::Button;
use super::indicator::{Indicator, StatusLed, StatusLight};
use super::profile::{Apa102Profile, BoardProfile, ButtonAction, GpioProfile};
use super::ActiveLevel;

/// The consumer name the kernel shows for hark's lines (`gpioinfo`), so an operator can see
/// who holds a pin.
const CONSUMER: &str = "hark";

/// The APA102 clock: the rate Seeed's own driver uses; short HAT traces take it easily.
const APA102_SPI_HZ: u32 = 8_000_000;

/// Why the board's pins could not be opened or driven. Each names the device or line, as the
/// fix is usually in config.txt, the profile or the device's permissions.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The GPIO chip's device node could not be opened (missing, or no permission).
    #[error("cannot open GPIO chip {path}: {source}")]
    OpenChip {
        /// The chip's path from the profile.
        path: String,
        /// The kernel's answer.
        source: gpio_cdev::Error,
    },
    /// A line could not be had (out of range, or held by another program or a driver).
    #[error("cannot request GPIO line {line} of {chip} for the {role}: {source}")]
    RequestLine {
        /// The chip's path.
        chip: String,
        /// The line's offset.
        line: u32,
        /// What hark wanted it for ("status LED", "button").
        role: &'static str,
        /// The kernel's answer.
        source: gpio_cdev::Error,
    },
    /// The SPI bus's device node could not be opened (SPI not enabled in config.txt, or no
    /// permission).
    #[error("cannot open SPI bus {path}: {source}")]
    OpenSpi {
        /// The spidev path from the profile.
        path: String,
        /// The kernel's answer.
        source: SPIError,
    },
    /// The SPI bus refused the mode or clock the LEDs need.
    #[error("cannot configure SPI bus {path}: {source}")]
    ConfigureSpi {
        /// The spidev path.
        path: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// Setting the status LED's line failed.
    #[error("cannot set the status LED: {0}")]
    Led(#[source] CdevPinError),
    /// Writing a frame to the APA102 LEDs failed.
    #[error("cannot write the APA102 LEDs: {0}")]
    Apa102(#[source] SPIError),
}

/// The status light a board has, opened: whichever kind, driven the same way.
pub enum Light {
    /// One LED on a GPIO line.
    Led(StatusLed<CdevPin>),
    /// APA102 RGB LEDs on an SPI bus.
    Apa102(Apa102Indicator<SpidevBus>),
}

impl StatusLight for Light {
    type Error = GpioError;

    fn show(&mut self, indicator: Indicator, now: Instant) -> Result<(), GpioError> {
        match self {
            Self::Led(led) => led.show(indicator, now).map_err(GpioError::Led),
            Self::Apa102(leds) => leds.show(indicator, now).map_err(GpioError::Apa102),
        }
    }

    fn tick(&mut self, now: Instant) -> Result<(), GpioError> {
        match self {
            Self::Led(led) => led.tick(now).map_err(GpioError::Led),
            Self::Apa102(leds) => leds.tick(now).map_err(GpioError::Apa102),
        }
    }

    fn indicator(&self) -> Indicator {
        match self {
            Self::Led(led) => led.indicator(),
            Self::Apa102(leds) => leds.indicator(),
        }
    }
}

/// A board's opened light and button: what the kiosk loop ticks and polls.
pub struct BoardIo {
    /// The status light, if the board has one.
    pub light: Option<Light>,
    /// The button, if the board has one.
    pub button: Option<Button<CdevPin>>,
    /// What the button does to the microphone.
    pub button_action: ButtonAction,
}

impl BoardIo {
    /// Opens the GPIO of `profile`'s board; a board without a `[gpio]` table gets `None` and
    /// opens nothing.
    pub fn from_profile(profile: &BoardProfile) -> Result<Option<Self>, GpioError> {
        profile.gpio.as_ref().map(Self::open).transpose()
    }

    /// Opens the lines and bus `gpio` names. The chip is opened only when a line is needed,
    /// so an SPI-only board does not depend on its path. A profile naming both an LED and
    /// APA102s (which [`BoardProfile::parse`] rejects) gets the APA102s.
    pub fn open(gpio: &GpioProfile) -> Result<Self, GpioError> {
        let mut chip = if gpio.led.is_some() || gpio.button.is_some() {
            Some(Chip::new(&gpio.chip).map_err(|source| GpioError::OpenChip {
                path: gpio.chip.clone(),
                source,
            })?)
        } else {
            None
        };
        let mut request = |line: u32, flags: LineRequestFlags, role: &'static str| {
            let chip = chip.as_mut().expect("chip opened for lines");
            chip.get_line(line)
                .and_then(|l| l.request(flags, 0, CONSUMER))
                .and_then(CdevPin::new)
                .map_err(|source| GpioError::RequestLine {
                    chip: gpio.chip.clone(),
                    line,
                    role,
                    source,
                })
        };

        let light = match (&gpio.apa102, &gpio.led) {
            (Some(apa102), _) => Some(Light::Apa102(open_apa102(apa102)?)),
            (None, Some(led)) => {
                // Requested at 0 (the line low) and driven to the right level by the first
                // tick: polarity lives in the driver, not in the line request.
                let pin = request(led.line, LineRequestFlags::OUTPUT, "status LED")?;
                Some(Light::Led(StatusLed::new(
                    pin,
                    ActiveLevel::from_active_low(led.active_low),
                )))
            }
            (None, None) => None,
        };
        let button = match &gpio.button {
            Some(button) => {
                let pin = request(button.line, LineRequestFlags::INPUT, "button")?;
                Some(Button::new(
                    pin,
                    ActiveLevel::from_active_low(button.active_low),
                    Duration::from_millis(button.debounce_ms),
                ))
            }
            None => None,
        };
        Ok(Self {
            light,
            button,
            button_action: gpio.button_action,
        })
    }
}

/// Opens and configures the APA102s' SPI bus: mode 0 (data sampled on the rising clock edge),
/// 8-bit words.
fn open_apa102(profile: &Apa102Profile) -> Result<Apa102Indicator<SpidevBus>, GpioError> {
    let mut bus = SpidevBus::open(&profile.spi).map_err(|source| GpioError::OpenSpi {
        path: profile.spi.clone(),
        source,
    })?;
    let options = SpidevOptions::new()
        .bits_per_word(8)
        .max_speed_hz(APA102_SPI_HZ)
        .mode(SpiModeFlags::SPI_MODE_0)
        .build();
    bus.configure(&options)
        .map_err(|source| GpioError::ConfigureSpi {
            path: profile.spi.clone(),
            source,
        })?;
    Ok(Apa102Indicator::new(bus, profile.count, profile.brightness))
}
