//! End-of-utterance and interruption options (the spec's `EOUConfig` and `InterruptConfig`),
//! with its defaults and validation.

use std::time::Duration;

use serde::Deserialize;

/// How long to wait after a final transcript before deciding the user's turn is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EouMode {
    /// Two levels: `max` if the turn detector is unsure (p < 0.85), else `min`.
    #[default]
    Default,
    /// Sliding: `min + (max - min) * (1 - p)`.
    Adaptive,
}

/// The turn detector probability below which DEFAULT mode waits the longer time.
pub const EOU_CERTAINTY_THRESHOLD: f32 = 0.85;

/// End-of-utterance timing.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EouConfig {
    /// DEFAULT or ADAPTIVE.
    pub mode: EouMode,
    /// `[min, max]` seconds of waiting for more speech.
    pub min_max_speech_wait_timeout: [f64; 2],
}

impl Default for EouConfig {
    fn default() -> Self {
        Self {
            mode: EouMode::Default,
            min_max_speech_wait_timeout: [0.5, 0.8],
        }
    }
}

/// A rejected option, with the spec's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOption(pub &'static str);

impl EouConfig {
    /// Checks the spec's rules (both > 0, min < max).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let [min, max] = self.min_max_speech_wait_timeout;
        if !(min.is_finite() && max.is_finite()) {
            return Err(InvalidOption(
                "min_max_speech_wait_timeout values must be numbers",
            ));
        }
        if min <= 0.0 || max <= 0.0 {
            return Err(InvalidOption(
                "min_max_speech_wait_timeout values must be greater than 0",
            ));
        }
        if min >= max {
            return Err(InvalidOption(
                "min_speech_wait_timeout must be less than max_speech_wait_timeout",
            ));
        }
        Ok(())
    }

    /// How long to wait for more speech, given the turn detector's probability (`None`
    /// without a turn detector, which waits `min`).
    pub fn wait(&self, probability: Option<f32>) -> Duration {
        let [min, max] = self.min_max_speech_wait_timeout;
        let secs = match (self.mode, probability) {
            (_, None) => min,
            (EouMode::Default, Some(p)) if p < EOU_CERTAINTY_THRESHOLD => max,
            (EouMode::Default, Some(_)) => min,
            (EouMode::Adaptive, Some(p)) => {
                min + (max - min) * (1.0 - f64::from(p.clamp(0.0, 1.0)))
            }
        };
        Duration::from_secs_f64(secs)
    }
}

/// Which signals may interrupt the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterruptMode {
    /// `interrupt_min_duration` of continuous speech (VAD).
    VadOnly,
    /// `interrupt_min_words` words in a transcript (STT).
    SttOnly,
    /// Either.
    #[default]
    Hybrid,
}

impl InterruptMode {
    /// Whether the VAD path is on.
    pub fn uses_vad(self) -> bool {
        matches!(self, InterruptMode::VadOnly | InterruptMode::Hybrid)
    }

    /// Whether the STT path is on.
    pub fn uses_stt(self) -> bool {
        matches!(self, InterruptMode::SttOnly | InterruptMode::Hybrid)
    }
}

/// Barge-in handling.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterruptConfig {
    /// VAD_ONLY, STT_ONLY or HYBRID.
    pub mode: InterruptMode,
    /// Seconds of continuous user speech that interrupt (VAD path).
    pub interrupt_min_duration: f64,
    /// Words in a transcript that interrupt (STT path).
    pub interrupt_min_words: usize,
    /// Seconds the agent stays paused before deciding an interruption was false.
    pub false_interrupt_pause_duration: f64,
    /// Pause instead of stopping, and resume if the user said nothing after all.
    pub resume_on_false_interrupt: bool,
}

impl Default for InterruptConfig {
    fn default() -> Self {
        Self {
            mode: InterruptMode::Hybrid,
            interrupt_min_duration: 0.5,
            interrupt_min_words: 2,
            false_interrupt_pause_duration: 2.0,
            resume_on_false_interrupt: false,
        }
    }
}

impl InterruptConfig {
    /// Checks the spec's rules (every number > 0).
    pub fn validate(&self) -> Result<(), InvalidOption> {
        if self.interrupt_min_duration.is_nan() || self.interrupt_min_duration <= 0.0 {
            return Err(InvalidOption(
                "interrupt_min_duration must be greater than 0",
            ));
        }
        if self.interrupt_min_words == 0 {
            return Err(InvalidOption("interrupt_min_words must be greater than 0"));
        }
        if self.false_interrupt_pause_duration.is_nan()
            || self.false_interrupt_pause_duration <= 0.0
        {
            return Err(InvalidOption(
                "false_interrupt_pause_duration must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// Words in a transcript, as the spec counts them (`len(text.strip().split())`).
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mode_waits_max_below_the_certainty_threshold_and_min_at_or_above_it() {
        let c = EouConfig::default();
        assert_eq!(c.wait(Some(0.2)), Duration::from_secs_f64(0.8));
        assert_eq!(c.wait(Some(0.849)), Duration::from_secs_f64(0.8));
        assert_eq!(c.wait(Some(0.85)), Duration::from_secs_f64(0.5));
        assert_eq!(c.wait(None), Duration::from_secs_f64(0.5));
    }

    #[test]
    fn adaptive_mode_slides_between_min_and_max() {
        let c = EouConfig {
            mode: EouMode::Adaptive,
            ..EouConfig::default()
        };
        assert_eq!(c.wait(Some(1.0)), Duration::from_secs_f64(0.5));
        assert_eq!(c.wait(Some(0.0)), Duration::from_secs_f64(0.8));
        let mid = c.wait(Some(0.5)).as_secs_f64();
        assert!((mid - 0.65).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn invalid_timeouts_get_the_spec_messages() {
        let bad = |min, max| {
            EouConfig {
                min_max_speech_wait_timeout: [min, max],
                ..EouConfig::default()
            }
            .validate()
            .unwrap_err()
            .0
        };
        assert_eq!(
            bad(0.0, 1.0),
            "min_max_speech_wait_timeout values must be greater than 0"
        );
        assert_eq!(
            bad(0.9, 0.8),
            "min_speech_wait_timeout must be less than max_speech_wait_timeout"
        );
        assert_eq!(
            bad(f64::NAN, 0.8),
            "min_max_speech_wait_timeout values must be numbers"
        );
        let i = InterruptConfig {
            interrupt_min_words: 0,
            ..InterruptConfig::default()
        };
        assert_eq!(
            i.validate().unwrap_err().0,
            "interrupt_min_words must be greater than 0"
        );
        assert!(InterruptConfig::default().validate().is_ok());
    }

    #[test]
    fn options_parse_from_toml_with_the_spec_spelling() {
        let c: EouConfig =
            toml::from_str("mode = \"ADAPTIVE\"\nmin_max_speech_wait_timeout = [0.3, 1.0]")
                .unwrap();
        assert_eq!(c.mode, EouMode::Adaptive);
        let i: InterruptConfig = toml::from_str("mode = \"VAD_ONLY\"").unwrap();
        assert!(i.mode.uses_vad() && !i.mode.uses_stt());
        assert_eq!(word_count("  hello   there \n"), 2);
    }
}
