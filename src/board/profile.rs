//! Board profiles: per-board defaults (audio devices, GPIO pins, inference threads) that a kiosk
//! picks by name, so an operator writes `board = "rpi4"` instead of ALSA strings and pin numbers.
//!
//! Every `boards/*.toml` is compiled into the binary: a device needs only the one file.

use std::fmt;

use serde::Deserialize;

/// The profiles shipped in `boards/`, by name (the file's stem). Kept sorted by name so
/// [`BoardProfile::names`] lists them in a stable order.
const BUILTIN: &[(&str, &str)] = &[
    (
        "respeaker-2mic",
        include_str!("../../boards/respeaker-2mic.toml"),
    ),
    ("rpi-zero2w", include_str!("../../boards/rpi-zero2w.toml")),
    ("rpi4", include_str!("../../boards/rpi4.toml")),
    ("rpi5", include_str!("../../boards/rpi5.toml")),
    (
        "usb-speakerphone",
        include_str!("../../boards/usb-speakerphone.toml"),
    ),
];

/// The APA102's global brightness when a profile does not say: dim enough for a kiosk at arm's
/// length (the full 31 is glaring and draws ~60 mA per LED).
const DEFAULT_APA102_BRIGHTNESS: u8 = 8;

/// The button debounce when a profile does not say: longer than a typical tactile switch's
/// bounce (under 10 ms) and shorter than a deliberate tap.
const DEFAULT_DEBOUNCE_MS: u64 = 30;

/// Why a board profile could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The name is not one of the built-in profiles; the message lists those that are, so a
    /// typo in hark.toml is fixed from the error alone.
    #[error("unknown board {name:?}; known boards: {known}")]
    UnknownBoard {
        /// The name asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: KnownBoards,
    },
    /// The profile's TOML does not match the schema.
    #[error("board profile {name:?}: {source}")]
    Parse {
        /// The profile's name (or file) whose text failed.
        name: String,
        /// The parser's message, with line and column.
        source: toml::de::Error,
    },
    /// The profile parsed but a value cannot work on any device.
    #[error("board profile {name:?}: {field}: {reason}")]
    Invalid {
        /// The profile's name (or file).
        name: String,
        /// The offending key, dotted (`gpio.apa102.count`).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The built-in board names, carried by [`ProfileError::UnknownBoard`] so callers can offer
/// them (e.g. in `hark check`) without parsing the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBoards(pub Vec<&'static str>);

impl fmt::Display for KnownBoards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// One board's defaults, as read from its `boards/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    /// The profile's name (its file's stem), for logs and errors; not a key in the file.
    #[serde(skip)]
    pub name: String,
    /// A line for `hark devices`/`hark check`, so an operator can tell the profiles apart.
    pub description: String,
    /// Inference threads for the on-device models: sized per board so the models keep real
    /// time without starving audio and networking of cores.
    pub threads: usize,
    /// The ALSA devices and format that work on this board out of the box.
    pub audio: AudioProfile,
    /// The board's status light and button, if it has any; `None` means hark opens no GPIO.
    #[serde(default)]
    pub gpio: Option<GpioProfile>,
}

/// ALSA devices and the format asked of them: what the kiosk transport opens unless hark.toml
/// overrides it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioProfile {
    /// The ALSA PCM the microphone is read from (`"default"`, `"plughw:CARD=x,DEV=0"`).
    pub capture: String,
    /// The ALSA PCM the voice is played to.
    pub playback: String,
    /// The sample rate (Hz) asked of the device: its native one, so ALSA does not resample.
    pub rate: u32,
    /// Microphone channels the device delivers (a HAT's two mics, a speakerphone's one).
    pub capture_channels: u16,
}

/// The board's GPIO wiring: which lines and buses carry the status light and the button.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioProfile {
    /// The GPIO character device holding the lines (`/dev/gpiochip0`).
    pub chip: String,
    /// What the button does to the microphone.
    #[serde(default)]
    pub button_action: ButtonAction,
    /// A single status LED on a GPIO line.
    #[serde(default)]
    pub led: Option<LedProfile>,
    /// A chain of APA102 RGB LEDs on an SPI bus.
    #[serde(default)]
    pub apa102: Option<Apa102Profile>,
    /// A push button on a GPIO line.
    #[serde(default)]
    pub button: Option<ButtonProfile>,
}

/// A status LED on one GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedProfile {
    /// The line's offset on the chip (the BCM GPIO number on a Pi).
    pub line: u32,
    /// True when the LED lights with the line low (wired from 3V3 into the pin).
    #[serde(default)]
    pub active_low: bool,
}

/// APA102 LEDs on an SPI bus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apa102Profile {
    /// The spidev node of the bus (`/dev/spidev0.0`).
    pub spi: String,
    /// LEDs in the chain: the frame must address every one, or the tail keeps stale colours.
    pub count: usize,
    /// The APA102's 5-bit global brightness, 0..=31.
    #[serde(default = "default_apa102_brightness")]
    pub brightness: u8,
}

/// A push button on one GPIO line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonProfile {
    /// The line's offset on the chip (the BCM GPIO number on a Pi).
    pub line: u32,
    /// True when pressing pulls the line low (a switch to ground with a pull-up: the usual).
    #[serde(default)]
    pub active_low: bool,
    /// How long the line must hold a new level before it counts, hiding contact bounce.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

/// What pressing the board's button does to the microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonAction {
    /// The mic is open only while the button is held: for noisy places where always-on
    /// listening would pick up bystanders.
    #[default]
    PushToTalk,
    /// The mic is open until a press mutes it and the next press opens it again: privacy for
    /// an always-listening kiosk.
    Mute,
}

fn default_apa102_brightness() -> u8 {
    DEFAULT_APA102_BRIGHTNESS
}

fn default_debounce_ms() -> u64 {
    DEFAULT_DEBOUNCE_MS
}

impl BoardProfile {
    /// The profile shipped in the binary under `name`, so a device needs no files beside the
    /// binary and hark.toml.
    pub fn builtin(name: &str) -> Result<Self, ProfileError> {
        let (name, text) =
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ProfileError::UnknownBoard {
                    name: name.to_owned(),
                    known: KnownBoards(Self::names().collect()),
                })?;
        Self::parse(name, text)
    }

    /// The built-in profiles' names, sorted: for `hark devices`, errors and completions.
    pub fn names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(name, _)| *name)
    }

    /// Reads a profile from TOML text, so an operator's own board file gets the same schema and
    /// checks as the built-in ones. `name` labels the profile and its errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, ProfileError> {
        let mut profile: Self = toml::from_str(text).map_err(|source| ProfileError::Parse {
            name: name.to_owned(),
            source,
        })?;
        profile.name = name.to_owned();
        profile.validate()?;
        Ok(profile)
    }

    /// Rejects values no device could run with, at load time rather than at the first frame.
    fn validate(&self) -> Result<(), ProfileError> {
        let invalid = |field, reason| ProfileError::Invalid {
            name: self.name.clone(),
            field,
            reason,
        };
        if self.threads == 0 {
            return Err(invalid("threads", "must be at least 1"));
        }
        if self.audio.rate == 0 {
            return Err(invalid("audio.rate", "must be above 0 Hz"));
        }
        if self.audio.capture_channels == 0 {
            return Err(invalid("audio.capture_channels", "must be at least 1"));
        }
        let Some(gpio) = &self.gpio else {
            return Ok(());
        };
        if let Some(apa102) = &gpio.apa102 {
            if apa102.count == 0 {
                return Err(invalid("gpio.apa102.count", "must be at least 1"));
            }
            if apa102.brightness > 31 {
                return Err(invalid("gpio.apa102.brightness", "must be 0..=31"));
            }
        }
        if gpio.led.is_some() && gpio.apa102.is_some() {
            return Err(invalid(
                "gpio.led",
                "a board shows its status on one light: set led or apa102, not both",
            ));
        }
        if let (Some(led), Some(button)) = (&gpio.led, &gpio.button) {
            if led.line == button.line {
                return Err(invalid("gpio.button.line", "is the LED's line too"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_sorted_and_unique() {
        let names: Vec<_> = BoardProfile::names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn every_builtin_profile_passes_validation() {
        for name in BoardProfile::names() {
            BoardProfile::builtin(name).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
