//! The board a kiosk runs on: its profile (audio devices, threads, pins) and the status light
//! and button that tell the person in front of it what hark is doing.
//!
//! The drivers are written against `embedded-hal` 1.0 traits, so they are tested with mock pins
//! and buses here and run on the GPIO character device and spidev on the board ([`gpio`]).

pub mod apa102;
pub mod button;
#[cfg(target_os = "linux")]
pub mod gpio;
pub mod indicator;
pub mod profile;

pub use apa102::{Apa102Indicator, Rgb};
pub use button::{Button, ButtonEvent, MicState, MicSwitch};
pub use indicator::{Indicator, Pattern, StatusLed, StatusLight};
pub use profile::{
    Apa102Profile, AudioProfile, BoardProfile, ButtonAction, ButtonProfile, GpioProfile,
    KnownBoards, LedProfile, ProfileError,
};

/// Which line level means "on" (LED lit, button pressed): boards wire both ways, and keeping
/// the polarity in the driver lets the rest of hark think only in on/off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActiveLevel {
    /// On is a high line (LED from the pin to ground; button to 3V3 with a pull-down).
    #[default]
    High,
    /// On is a low line (LED from 3V3 into the pin; button to ground with a pull-up).
    Low,
}

impl ActiveLevel {
    /// The level a profile's `active_low` key describes.
    pub const fn from_active_low(active_low: bool) -> Self {
        if active_low {
            Self::Low
        } else {
            Self::High
        }
    }

    /// Whether a line reading `high` means "on" at this polarity.
    pub const fn is_on(self, high: bool) -> bool {
        match self {
            Self::High => high,
            Self::Low => !high,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ActiveLevel;

    #[test]
    fn active_low_inverts_the_line() {
        assert!(ActiveLevel::from_active_low(false).is_on(true));
        assert!(!ActiveLevel::from_active_low(false).is_on(false));
        assert!(ActiveLevel::from_active_low(true).is_on(false));
        assert!(!ActiveLevel::from_active_low(true).is_on(true));
    }
}
