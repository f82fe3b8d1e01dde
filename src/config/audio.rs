//! `[audio]`: the kiosk's sound card (the local transport).
//!
//! Every key is optional: what the file leaves out comes from the board profile (`board =
//! "rpi4"`), then from hark's defaults, so a profile can be corrected one key at a time.

use std::time::Duration;

use serde::Deserialize;

use crate::transport::local::{LocalAudioConfig, StreamRequest, PIPELINE_RATE};

/// `[audio]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// ALSA capture device (`default`, `plughw:1,0`, `hw:CARD=seeed2micvoicec,DEV=0`).
    pub capture: Option<String>,
    /// ALSA playback device.
    pub playback: Option<String>,
    /// Rate asked of both devices; hark resamples whatever is granted to 16 kHz.
    pub rate: Option<u32>,
    /// Microphone channels to record (averaged to mono); a 2-mic HAT records 2.
    pub capture_channels: Option<u32>,
    /// Speaker channels (the voice goes to each).
    pub playback_channels: Option<u32>,
    /// Period length in milliseconds: the unit of device wake-ups and of added latency.
    pub period_ms: Option<u32>,
    /// Periods in each device buffer.
    pub periods: Option<u32>,
    /// Speech queued before the speaker starts, in milliseconds (absorbs scheduling jitter).
    pub prefill_ms: Option<u32>,
}

/// Values a board profile supplies for keys the file leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioDefaults {
    /// Capture device.
    pub capture: Option<String>,
    /// Playback device.
    pub playback: Option<String>,
    /// Device rate.
    pub rate: Option<u32>,
    /// Capture channels.
    pub capture_channels: Option<u32>,
}

/// hark's defaults: ALSA's `default` device (which converts anything), at the pipeline's rate,
/// 10 ms periods, 4 to a buffer, 60 ms of prefill.
const DEFAULT_PERIOD_MS: u32 = 10;
const DEFAULT_PERIODS: u32 = 4;
const DEFAULT_PREFILL_MS: u32 = 60;

impl AudioConfig {
    /// The devices to open: this section, then `board`, then hark's defaults.
    pub fn resolve(&self, board: &AudioDefaults) -> LocalAudioConfig {
        let device = |mine: &Option<String>, theirs: &Option<String>| {
            mine.clone()
                .or_else(|| theirs.clone())
                .unwrap_or_else(|| "default".into())
        };
        let rate = self.rate.or(board.rate).unwrap_or(PIPELINE_RATE);
        let period_ms = self.period_ms.unwrap_or(DEFAULT_PERIOD_MS);
        let periods = self.periods.unwrap_or(DEFAULT_PERIODS);
        LocalAudioConfig {
            capture: StreamRequest {
                device: device(&self.capture, &board.capture),
                rate,
                channels: self
                    .capture_channels
                    .or(board.capture_channels)
                    .unwrap_or(1),
                period_ms,
                periods,
            },
            playback: StreamRequest {
                device: device(&self.playback, &board.playback),
                rate,
                channels: self.playback_channels.unwrap_or(1),
                period_ms,
                periods,
            },
            prefill: Duration::from_millis(u64::from(
                self.prefill_ms.unwrap_or(DEFAULT_PREFILL_MS),
            )),
        }
    }

    /// The first key out of range, as (key under `audio.`, what was expected).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |key, v: Option<u32>, lo: u32, hi: u32, unit: &str| match v {
            Some(v) if !(lo..=hi).contains(&v) => {
                Err((key, format!("expected {lo} to {hi} {unit}, got {v}")))
            }
            _ => Ok(()),
        };
        range("rate", self.rate, 8_000, 192_000, "Hz")?;
        range("capture_channels", self.capture_channels, 1, 32, "channels")?;
        range(
            "playback_channels",
            self.playback_channels,
            1,
            32,
            "channels",
        )?;
        range("period_ms", self.period_ms, 2, 100, "ms")?;
        range("periods", self.periods, 2, 32, "periods")?;
        range("prefill_ms", self.prefill_ms, 0, 1000, "ms")?;
        for (key, v) in [("capture", &self.capture), ("playback", &self.playback)] {
            if v.as_deref()
                .is_some_and(|d| d.trim().is_empty() || d.contains('\0'))
            {
                return Err((
                    key,
                    "expected an ALSA device name such as \"default\"".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_overrides_the_board_which_overrides_the_defaults() {
        let board = AudioDefaults {
            capture: Some("plughw:CARD=seeed2micvoicec,DEV=0".into()),
            playback: Some("plughw:CARD=seeed2micvoicec,DEV=0".into()),
            rate: Some(48_000),
            capture_channels: Some(2),
        };
        let mine = AudioConfig {
            playback: Some("default".into()),
            ..AudioConfig::default()
        };
        let c = mine.resolve(&board);
        assert_eq!(c.capture.device, "plughw:CARD=seeed2micvoicec,DEV=0");
        assert_eq!(c.playback.device, "default");
        assert_eq!((c.capture.rate, c.capture.channels), (48_000, 2));
        assert_eq!(c.playback.channels, 1);
        let plain = AudioConfig::default().resolve(&AudioDefaults::default());
        assert_eq!(plain.capture.device, "default");
        assert_eq!(plain.capture.rate, PIPELINE_RATE);
        assert_eq!((plain.capture.period_ms, plain.capture.periods), (10, 4));
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let bad = AudioConfig {
            period_ms: Some(500),
            ..AudioConfig::default()
        };
        let (key, message) = bad.validate().unwrap_err();
        assert_eq!(key, "period_ms");
        assert!(message.contains("2 to 100 ms"), "{message}");
    }
}
