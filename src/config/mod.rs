//! `hark.toml`: one file configures the device.
//!
//! Parsed with serde into typed structs. Unknown keys are rejected (a typo must not silently fall
//! back to a default on a device nobody watches), and every error names the file, the line and the
//! key, and says what was expected. `${VAR}` in any string value is replaced from the environment
//! so API keys stay out of the file.

pub mod agent;
pub mod audio;
pub mod dtmf;
pub mod entries;
mod env;
mod lines;
pub mod llm;
pub mod realtime;
pub mod sip;
pub mod stt;
pub mod tts;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use agent::{AgentConfig, AgentEouConfig, AgentInterruptConfig, AgentIssue, WakeUpConfig};
pub use audio::{AudioConfig, AudioDefaults};
pub use env::expand_env;
pub use llm::{LlmBuildError, LlmConfig, LlmIssue, LlmProvider};
pub use realtime::{RealtimeBuildError, RealtimeConfig, RealtimeIssue, RealtimeProvider};
pub use sip::{SipConfig, SipIssue};
pub use stt::{SttBuildError, SttConfig, SttIssue, SttProvider};
pub use tts::{TtsBuildError, TtsConfig, TtsIssue, TtsProvider};

use crate::listen::engine::EngineChoice;
use crate::providers::fallback::FallbackPolicy;

/// Where the config comes from when `--config` is not given.
pub const ENV_CONFIG: &str = "HARK_CONFIG";
/// The system-wide config a packaged device reads.
pub const SYSTEM_CONFIG: &str = "/etc/hark/hark.toml";

/// The whole configuration. Every section is optional; an empty file is a valid config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the model files are, and which inference engine runs them.
    #[serde(default)]
    pub models: ModelsConfig,
    /// The on-device listening front end.
    #[serde(default)]
    pub listen: ListenConfig,
    /// A conversational agent defined here rather than in Rust; none: no agent is configured.
    #[serde(default)]
    pub agent: Option<AgentConfig>,
    /// The language model the agent talks through; none: no LLM is configured.
    #[serde(default)]
    pub llm: Option<LlmConfig>,
    /// The speech-to-text service that transcribes the user; none: no STT is configured.
    #[serde(default)]
    pub stt: Option<SttConfig>,
    /// The voice that speaks the agent's replies; none: no TTS is configured.
    #[serde(default)]
    pub tts: Option<TtsConfig>,
    /// The speech-to-speech model the agent talks through; none: no realtime model.
    #[serde(default)]
    pub realtime: Option<RealtimeConfig>,
    /// How `fallback` lists in `[stt]`, `[llm]` and `[tts]` behave.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// The kiosk's sound card.
    #[serde(default)]
    pub audio: AudioConfig,
    /// A built-in board profile (`rpi5`, `rpi4`, `rpi-zero2w`, `respeaker-2mic`,
    /// `usb-speakerphone`) supplying the devices, GPIO and inference threads this file does
    /// not set.
    #[serde(default)]
    pub board: Option<String>,
    /// The phone endpoint (SIP/RTP); none: no phone line.
    #[serde(default)]
    pub sip: Option<SipConfig>,
}

/// `[fallback]`: when a failed provider is tried again and when it is given up on, for every
/// section's `fallback` list (spec/30 §8 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Seconds a failed provider rests before a new request may try it again.
    #[serde(default = "FallbackConfig::default_cooldown")]
    pub cooldown: f64,
    /// Consecutive failures after which a provider is not tried again until restart.
    #[serde(default = "FallbackConfig::default_max_failures")]
    pub max_failures: u32,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            cooldown: Self::default_cooldown(),
            max_failures: Self::default_max_failures(),
        }
    }
}

impl FallbackConfig {
    fn default_cooldown() -> f64 {
        FallbackPolicy::default().cooldown.as_secs_f64()
    }
    fn default_max_failures() -> u32 {
        FallbackPolicy::default().max_failures
    }

    /// The policy; the values were checked when the file was loaded.
    pub fn policy(&self) -> FallbackPolicy {
        FallbackPolicy {
            cooldown: Duration::try_from_secs_f64(self.cooldown).unwrap_or_default(),
            max_failures: self.max_failures,
        }
    }
}

/// A configured provider that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    /// `[stt]`.
    #[error(transparent)]
    Stt(#[from] SttBuildError),
    /// `[llm]`.
    #[error(transparent)]
    Llm(#[from] LlmBuildError),
    /// `[tts]`.
    #[error(transparent)]
    Tts(#[from] TtsBuildError),
    /// `[realtime]`.
    #[error(transparent)]
    Realtime(#[from] RealtimeBuildError),
}

impl Config {
    /// The providers the `[stt]`, `[llm]`, `[tts]` and `[realtime]` sections describe, each
    /// with its fallback chain, for a session whose front end is `[listen]`.
    pub fn providers(&self) -> Result<crate::session::Providers, ProvidersError> {
        let policy = self.fallback.policy();
        Ok(crate::session::Providers {
            stt: self
                .stt
                .as_ref()
                .map(|c| c.build_chain(policy))
                .transpose()?,
            llm: self
                .llm
                .as_ref()
                .map(|c| c.build_chain(policy))
                .transpose()?,
            tts: self
                .tts
                .as_ref()
                .map(|c| c.build_chain(policy))
                .transpose()?,
            realtime: self.realtime.as_ref().map(|c| c.build()).transpose()?,
            turn_detector: self.listen.turn.enabled,
            vad: true,
        })
    }
}

/// `[models]`: model lookup and engine selection shared by all on-device models.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// A directory searched before the defaults (`$HARK_MODELS`, `/usr/share/hark/models`, `./models`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Path to `libonnxruntime.so`; by default it is looked for next to the models.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
}

/// `[listen]`: denoise → VAD → turn detection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Acoustic echo cancellation of the device's own playback, before denoising.
    #[serde(default)]
    pub echo: EchoConfig,
    /// RNNoise before the VAD.
    #[serde(default)]
    pub denoise: DenoiseConfig,
    /// Silero voice-activity detection.
    #[serde(default)]
    pub vad: VadConfig,
    /// Smart Turn end-of-turn detection.
    #[serde(default)]
    pub turn: TurnConfig,
}

/// `[listen.denoise]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiseConfig {
    /// RNNoise costs CPU and can clip soft onsets; a quiet room may not need it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for DenoiseConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[listen.echo]`: WebRTC's AEC3 (sonora) on the microphone, with the playback as reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// A kiosk hears its own loudspeaker; without cancellation the agent's voice would barge in
    /// on itself. Off only for a headset or a sound card that cancels echo in hardware.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// WebRTC's noise suppressor after the canceller; off since RNNoise already runs.
    #[serde(default)]
    pub noise_suppression: bool,
    /// WebRTC's AGC2 digital gain; off since it moves the levels the VAD was tuned on.
    #[serde(default)]
    pub agc: bool,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            noise_suppression: false,
            agc: false,
        }
    }
}

/// `[listen.vad]`: the VideoSDK Silero plugin's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VadConfig {
    /// Which engine runs Silero.
    #[serde(default)]
    pub engine: EngineChoice,
    /// Nominal speech threshold; the hysteresis pair below derives from it unless given.
    #[serde(default = "VadConfig::default_threshold")]
    pub threshold: f32,
    /// Smoothed probability at or above which speech starts (default `threshold - 0.1`).
    pub start_threshold: Option<f32>,
    /// Smoothed probability below which silence is counted (default `threshold - 0.25`).
    pub end_threshold: Option<f32>,
    /// Seconds of speech before `start_of_speech` is emitted.
    #[serde(default = "VadConfig::default_min_speech")]
    pub min_speech: f32,
    /// Seconds of silence before `end_of_speech` is emitted.
    #[serde(default = "VadConfig::default_min_silence")]
    pub min_silence: f32,
    /// Seconds of audio kept before the detected start, so STT and the turn model hear the onset.
    #[serde(default = "VadConfig::default_padding")]
    pub padding: f32,
    /// Weight of the newest probability in the exponential moving average (1 = no smoothing).
    #[serde(default = "VadConfig::default_smoothing")]
    pub smoothing: f32,
}

impl VadConfig {
    fn default_threshold() -> f32 {
        0.5
    }
    fn default_min_speech() -> f32 {
        0.05
    }
    fn default_min_silence() -> f32 {
        0.4
    }
    fn default_padding() -> f32 {
        0.5
    }
    fn default_smoothing() -> f32 {
        0.35
    }
    /// The threshold at or above which speech starts.
    pub fn start_threshold(&self) -> f32 {
        self.start_threshold
            .unwrap_or(self.threshold - 0.1)
            .max(0.01)
    }
    /// The threshold below which silence is counted.
    pub fn end_threshold(&self) -> f32 {
        self.end_threshold
            .unwrap_or(self.threshold - 0.25)
            .max(0.01)
    }
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            engine: EngineChoice::Auto,
            threshold: Self::default_threshold(),
            start_threshold: None,
            end_threshold: None,
            min_speech: Self::default_min_speech(),
            min_silence: Self::default_min_silence(),
            padding: Self::default_padding(),
            smoothing: Self::default_smoothing(),
        }
    }
}

/// `[listen.turn]`: Smart Turn v3.2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// Turn detection can be switched off; end of speech then ends the turn.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which engine runs Smart Turn.
    #[serde(default)]
    pub engine: EngineChoice,
    /// Probability at or above which a pause is the end of the turn (inclusive, as the spec's EOU).
    #[serde(default = "TurnConfig::default_threshold")]
    pub threshold: f32,
    /// Inference threads for Smart Turn (the VAD always uses one).
    #[serde(default = "TurnConfig::default_threads")]
    pub threads: usize,
}

impl TurnConfig {
    fn default_threshold() -> f32 {
        0.5
    }
    fn default_threads() -> usize {
        1
    }
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            engine: EngineChoice::Auto,
            threshold: Self::default_threshold(),
            threads: Self::default_threads(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A config that could not be used. Messages name the file, line and key, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// Dotted key path, e.g. `listen.vad.threshold`.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A value parsed but is out of range, and the key is not in the file (a default that
    /// conflicts with a given value); otherwise such errors are [`ConfigError::Invalid`].
    #[error("{path}: {key}: {message}")]
    Value {
        /// The config file.
        path: PathBuf,
        /// Dotted key path.
        key: String,
        /// What was expected.
        message: String,
    },
}

impl Config {
    /// Picks the config file: `--config`, then `$HARK_CONFIG`, then `/etc/hark/hark.toml`.
    /// `None` when none is given and the system file does not exist (built-in defaults apply).
    pub fn locate(cli: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = cli {
            return Some(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os(ENV_CONFIG).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let system = Path::new(SYSTEM_CONFIG);
        system.exists().then(|| system.to_path_buf())
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = env::Expand(toml::Deserializer::new(text));
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let start = inner.span().map_or(0, |s| s.start.min(text.len()));
            let line = 1 + text[..start].matches('\n').count();
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: inner.message().trim().to_string(),
            }
        })?;
        config.validate(path, text)?;
        let mut config = config;
        // The board's inference threads, unless the file sets them.
        if let Some(board) = config.board_profile() {
            if lines::line_of(text, "listen.turn.threads").is_none() {
                config.listen.turn.threads = board.threads;
            }
        }
        Ok(config)
    }

    /// The board profile `board` names (checked when the file was loaded).
    pub fn board_profile(&self) -> Option<crate::board::profile::BoardProfile> {
        let name = self.board.as_deref()?;
        crate::board::profile::BoardProfile::builtin(name).ok()
    }

    /// What the board supplies to `[audio]`.
    pub fn audio_defaults(&self) -> AudioDefaults {
        self.board_profile()
            .map(|b| AudioDefaults {
                capture: Some(b.audio.capture),
                playback: Some(b.audio.playback),
                rate: Some(b.audio.rate),
                capture_channels: Some(u32::from(b.audio.capture_channels)),
            })
            .unwrap_or_default()
    }

    /// Checks what serde cannot; errors point at the key's line when the file sets it.
    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| match lines::line_of(text, key) {
            Some(line) => ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                key: key.into(),
                message,
            },
            None => ConfigError::Value {
                path: path.to_path_buf(),
                key: key.into(),
                message,
            },
        };
        let unit = |key: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(
                    key,
                    format!("expected a probability between 0 and 1, got {v}"),
                ))
            }
        };
        let seconds = |key: &str, v: f32| {
            if v.is_finite() && (0.0..=10.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(
                    key,
                    format!("expected seconds between 0 and 10, got {v}"),
                ))
            }
        };
        let vad = &self.listen.vad;
        unit("listen.vad.threshold", vad.threshold)?;
        if let Some(v) = vad.start_threshold {
            unit("listen.vad.start_threshold", v)?;
        }
        if let Some(v) = vad.end_threshold {
            unit("listen.vad.end_threshold", v)?;
        }
        if vad.end_threshold() > vad.start_threshold() {
            return Err(bad(
                "listen.vad.end_threshold",
                format!(
                    "expected at most start_threshold ({}), got {}",
                    vad.start_threshold(),
                    vad.end_threshold()
                ),
            ));
        }
        seconds("listen.vad.min_speech", vad.min_speech)?;
        seconds("listen.vad.min_silence", vad.min_silence)?;
        seconds("listen.vad.padding", vad.padding)?;
        if !(vad.smoothing > 0.0 && vad.smoothing <= 1.0) {
            return Err(bad(
                "listen.vad.smoothing",
                format!("expected a weight in (0, 1], got {}", vad.smoothing),
            ));
        }
        unit("listen.turn.threshold", self.listen.turn.threshold)?;
        if !(1..=16).contains(&self.listen.turn.threads) {
            return Err(bad(
                "listen.turn.threads",
                format!("expected 1 to 16 threads, got {}", self.listen.turn.threads),
            ));
        }
        if let Some(agent) = &self.agent {
            agent
                .validate()
                .map_err(|i| bad(&format!("agent.{}", i.key), i.message))?;
        }
        if let Some(llm) = &self.llm {
            llm.validate()
                .map_err(|i| bad(&format!("llm.{}", i.key), i.message))?;
        }
        if let Some(stt) = &self.stt {
            stt.validate()
                .map_err(|i| bad(&format!("stt.{}", i.key), i.message))?;
        }
        if let Some(tts) = &self.tts {
            tts.validate()
                .map_err(|i| bad(&format!("tts.{}", i.key), i.message))?;
        }
        if !(self.fallback.cooldown >= 0.0 && self.fallback.cooldown <= 86_400.0) {
            return Err(bad(
                "fallback.cooldown",
                format!(
                    "expected seconds from 0 to 86400, got {}",
                    self.fallback.cooldown
                ),
            ));
        }
        if self.fallback.max_failures == 0 {
            return Err(bad(
                "fallback.max_failures",
                "expected at least 1 failure, got 0".into(),
            ));
        }
        if let Some(realtime) = &self.realtime {
            realtime
                .validate()
                .map_err(|i| bad(&format!("realtime.{}", i.key), i.message))?;
        }
        if let Some(name) = &self.board {
            crate::board::profile::BoardProfile::builtin(name)
                .map_err(|e| bad("board", e.to_string()))?;
        }
        self.audio
            .validate()
            .map_err(|(key, message)| bad(&format!("audio.{key}"), message))?;
        if let Some(sip) = &self.sip {
            sip.validate()
                .map_err(|i| bad(&format!("sip.{}", i.key), i.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("hark.toml"))
    }

    #[test]
    fn a_board_supplies_what_the_file_leaves_out() {
        let c = parse("board = \"respeaker-2mic\"\n[audio]\nplayback = \"default\"\n").unwrap();
        let audio = c.audio.resolve(&c.audio_defaults());
        assert_eq!(audio.capture.device, "plughw:CARD=seeed2micvoicec,DEV=0");
        assert_eq!(audio.capture.channels, 2);
        assert_eq!(audio.playback.device, "default", "the file wins");
        assert_eq!(c.listen.turn.threads, 2, "the board's inference threads");
        let own = parse("board = \"rpi4\"\n[listen.turn]\nthreads = 1\n").unwrap();
        assert_eq!(own.listen.turn.threads, 1, "the file wins");
    }

    #[test]
    fn an_unknown_board_is_an_error_on_its_line_naming_the_known_ones() {
        let e =
            parse("# the lobby kiosk\n\nboard = \"rpi3\"\n[audio]\nrate = 16000\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("hark.toml:3: board: "), "{text}");
        assert!(
            text.contains("rpi3") && text.contains("rpi4") && text.contains("respeaker-2mic"),
            "{text}"
        );
    }

    #[test]
    fn fallback_lists_build_chains_with_the_fallback_policy() {
        let c = parse(
            "[fallback]\ncooldown = 30\n\
             [stt]\nprovider = \"deepgram\"\napi_key = \"k\"\n\
             [[stt.fallback]]\nprovider = \"openai\"\nbase_url = \"http://10.0.0.5:8000/v1\"\n\
             [llm]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\n\
             [[llm.fallback]]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\n\
             [[llm.fallback]]\nprovider = \"openai\"\nbase_url = \"http://10.0.0.5:11434/v1\"\nmodel = \"llama3.2\"\n\
             [tts]\nprovider = \"openai\"\n\
             [[tts.fallback]]\nprovider = \"espeak\"\n",
        )
        .unwrap();
        assert_eq!(
            c.fallback.policy().cooldown,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(c.fallback.policy().max_failures, 3);
        let p = c.providers().unwrap();
        assert_eq!(p.stt.unwrap().label(), "fallback-stt(deepgram,openai)");
        assert_eq!(
            p.llm.unwrap().label(),
            "fallback-llm(openai,anthropic,openai)"
        );
        let tts = p.tts.unwrap();
        assert_eq!(tts.label(), "fallback-tts(openai,espeak)");
        assert_eq!(tts.sample_rate(), 24_000, "the primary's rate");
        assert!(p.realtime.is_none());
        // Without a list, the provider itself.
        let c = parse("[llm]\nprovider = \"openai\"\nmodel = \"m\"\n").unwrap();
        assert_eq!(c.providers().unwrap().llm.unwrap().label(), "openai");
    }

    #[test]
    fn fallback_mistakes_name_the_line_and_the_entry() {
        let msg = |t: &str| parse(t).unwrap_err().to_string();
        assert_eq!(
            msg("[llm]\nprovider = \"openai\"\nmodel = \"m\"\n\
                 [[llm.fallback]]\nprovider = \"openai\"\nmodel = \"n\"\ntemperature = 5.0\n"),
            "hark.toml:7: llm.fallback[0].temperature: expected a temperature between 0 and 2, got 5"
        );
        assert!(msg(
            "[tts]\nprovider = \"espeak\"\n[[tts.fallback]]\nprovider = \"espeak\"\n\
             [[tts.fallback.fallback]]\nprovider = \"espeak\"\n"
        )
        .contains("tts.fallback[0].fallback: a fallback has no fallbacks of its own"));
        assert_eq!(
            msg("[fallback]\nmax_failures = 0\n"),
            "hark.toml:2: fallback.max_failures: expected at least 1 failure, got 0"
        );
        assert!(msg("[fallback]\ncooldown = -1\n").starts_with("hark.toml:2: fallback.cooldown"));
    }

    #[test]
    fn empty_file_gives_the_silero_plugin_defaults() {
        let c = parse("").unwrap();
        let vad = &c.listen.vad;
        assert_eq!(vad.threshold, 0.5);
        assert!((vad.start_threshold() - 0.4).abs() < 1e-6);
        assert!((vad.end_threshold() - 0.25).abs() < 1e-6);
        assert_eq!(
            (vad.min_speech, vad.min_silence, vad.padding),
            (0.05, 0.4, 0.5)
        );
        assert_eq!(vad.smoothing, 0.35);
        assert!(c.listen.denoise.enabled && c.listen.turn.enabled);
    }

    #[test]
    fn echo_cancellation_is_on_and_alone_by_default_and_refuses_unknown_keys() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.echo, super::EchoConfig::default());
        let e = &c.listen.echo;
        assert!(e.enabled && !e.noise_suppression && !e.agc);
        let c = parse("[listen.echo]\nenabled = false\nagc = true\n").unwrap();
        assert!(!c.listen.echo.enabled && c.listen.echo.agc);
        let err = parse("[listen.echo]\ndelay_ms = 40\n").unwrap_err();
        assert!(err.to_string().contains("delay_ms"), "{err}");
    }

    #[test]
    fn wrong_type_names_file_line_key_and_expectation() {
        let err = parse("[listen.vad]\nmin_speech = 0.1\nthreshold = \"high\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("hark.toml:3: listen.vad.threshold:"),
            "{msg}"
        );
        assert!(msg.contains("expected f32"), "{msg}");
    }

    #[test]
    fn unknown_key_is_rejected_with_the_valid_ones() {
        let msg = parse("\n[listen.vad]\ntreshold = 0.6\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("hark.toml:3: listen.vad"), "{msg}");
        assert!(
            msg.contains("unknown field `treshold`") && msg.contains("threshold"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_engine_lists_the_choices() {
        let msg = parse("[listen.turn]\nengine = \"cuda\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("hark.toml:2: listen.turn.engine:"), "{msg}");
        assert!(
            msg.contains("auto") && msg.contains("tract") && msg.contains("onnxruntime"),
            "{msg}"
        );
    }

    #[test]
    fn broken_toml_names_the_line() {
        let msg = parse("[listen]\ndenoise = { enabled = \n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("hark.toml:2:"), "{msg}");
    }

    #[test]
    fn out_of_range_value_says_what_is_expected() {
        let msg = parse("[listen.vad]\nthreshold = 1.5\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "hark.toml:2: listen.vad.threshold: expected a probability between 0 and 1, got 1.5"
        );
        let msg = parse("[listen.vad]\nstart_threshold = 0.2\nend_threshold = 0.3\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "hark.toml:3: listen.vad.end_threshold: expected at most start_threshold"
            ),
            "{msg}"
        );
        // A default that conflicts with a given value has no line of its own.
        let msg = parse("[listen.vad]\nstart_threshold = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("hark.toml: listen.vad.end_threshold: expected at most"),
            "{msg}"
        );
    }

    #[test]
    fn env_vars_are_substituted_in_strings() {
        std::env::set_var("HARK_TEST_MODELS_DIR", "/opt/models");
        let c = parse("[models]\ndir = \"${HARK_TEST_MODELS_DIR}/v1\"\n").unwrap();
        assert_eq!(c.models.dir.as_deref(), Some(Path::new("/opt/models/v1")));
    }

    #[test]
    fn missing_env_var_is_an_error_on_its_line() {
        let msg = parse("[models]\n\ndir = \"${HARK_TEST_SURELY_UNSET}\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("hark.toml:3: models.dir:"), "{msg}");
        assert!(
            msg.contains("HARK_TEST_SURELY_UNSET") && msg.contains("not set"),
            "{msg}"
        );
    }
}

#[cfg(test)]
mod example {
    use std::path::Path;

    use crate::agent::mcp::McpServerConfig;
    use crate::agent::webhook::WebhookMethod;
    use crate::session::SessionOptions;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/hark.toml");

    #[test]
    fn the_shipped_example_config_is_valid_and_states_the_defaults() {
        let c = super::Config::load(Path::new(EXAMPLE)).unwrap();
        let d = super::Config::default();
        assert_eq!(format!("{:?}", c.listen), format!("{:?}", d.listen));
        assert!(c.agent.is_none(), "the agent example is commented out");
        assert!(c.llm.is_none(), "the llm example is commented out");
        assert!(c.stt.is_none(), "the stt example is commented out");
        assert!(c.tts.is_none(), "the tts example is commented out");
        assert!(
            c.realtime.is_none(),
            "the realtime example is commented out"
        );
    }

    /// The example's `[agent]` block is commented out (`#key = …`; prose is `# …`): with the
    /// `#` removed it must be valid, cover every key, and show the defaults.
    #[test]
    fn the_shipped_agent_example_is_valid_and_states_the_defaults() {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.is_empty() && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        for var in [
            "HOTEL_API_TOKEN",
            "TOOLS_TOKEN",
            "WEATHER_API_KEY",
            "OPENAI_API_KEY",
            "OPENAI_ORG",
            "ELEVENLABS_API_KEY",
            "DEEPGRAM_API_KEY",
            "SIP_PASSWORD",
            "SIP_INBOUND_PASSWORD",
        ] {
            std::env::set_var(var, "example-value");
        }
        let c = super::Config::parse(&uncommented, Path::new("hark.toml")).unwrap();
        let agent = c.agent.expect("the uncommented example has an agent");
        let (o, d) = (agent.session_options(), SessionOptions::default());
        assert_eq!((o.eou, o.interrupt), (d.eou, d.interrupt));
        assert_eq!(
            (o.max_tool_depth, o.tool_timeout),
            (d.max_tool_depth, d.tool_timeout)
        );
        assert_eq!(o.wake_up.unwrap().max_prompts, 1);
        assert!(!o.preemptive_generation);
        let vm = o.voicemail.expect("the example detects voicemail");
        assert_eq!(vm.listen, std::time::Duration::from_secs(2));
        assert_eq!(vm.prompt, crate::telephony::voicemail::DEFAULT_PROMPT);
        assert!(matches!(
            vm.action,
            crate::telephony::voicemail::VoicemailAction::LeaveMessage(_)
        ));
        assert_eq!(agent.thinking_audio.as_ref().unwrap().volume, 0.3);
        assert_eq!(
            agent.tool_names(),
            [
                "end_call",
                "transfer_call",
                "send_dtmf",
                "warm_transfer",
                "book_room"
            ]
        );
        let hook = &agent.webhooks[0];
        assert_eq!((hook.timeout_s, hook.method), (10.0, WebhookMethod::Post));
        let [McpServerConfig::Http(http), McpServerConfig::Stdio(stdio)] = &agent.mcp_servers[..]
        else {
            panic!(
                "expected an HTTP and a stdio server: {:?}",
                agent.mcp_servers
            );
        };
        assert_eq!(
            (
                http.connect_timeout_s,
                http.read_timeout_s,
                http.session_timeout_s
            ),
            (10.0, 300.0, 5.0)
        );
        assert_eq!(stdio.session_timeout_s, 5.0);
        assert!(stdio.cwd.is_some() && !stdio.env.is_empty());

        assert_eq!(
            c.fallback,
            super::FallbackConfig::default(),
            "the example states the defaults"
        );
        let llm = c.llm.expect("the uncommented example has an llm");
        assert_eq!(llm.fallback.len(), 1);
        assert_eq!(llm.fallback[0].model, "llama3.2");
        assert_eq!(
            c.tts.as_ref().map(|t| t.fallback[0].provider),
            Some(super::TtsProvider::Espeak)
        );
        assert_eq!(llm.provider, super::LlmProvider::OpenAi);
        assert_eq!(llm.model, "gpt-4o-mini");
        assert_eq!(
            llm.api_key.as_ref().map(|k| k.expose()),
            Some("example-value")
        );
        assert_eq!((llm.temperature, llm.max_tokens), (Some(0.8), Some(300)));
        assert_eq!(
            llm.headers.keys().collect::<Vec<_>>(),
            ["OpenAI-Organization"]
        );
        let (o, d) = (
            llm.provider_config().unwrap(),
            super::LlmConfig::new(super::LlmProvider::OpenAi, "m")
                .provider_config()
                .unwrap(),
        );
        assert_eq!(
            o.base_url, d.base_url,
            "the example shows the default base URL"
        );
        assert_eq!(
            (
                o.connect_timeout,
                o.first_byte_timeout,
                o.idle_timeout,
                o.retry
            ),
            (
                d.connect_timeout,
                d.first_byte_timeout,
                d.idle_timeout,
                d.retry
            ),
            "the example shows the default timeouts and retries"
        );
        assert!(llm.build().is_ok());

        let tts = c.tts.expect("the uncommented example has a tts");
        assert_eq!(tts.provider, super::TtsProvider::ElevenLabs);
        let (o, d) = (
            tts.settings().unwrap(),
            super::TtsConfig {
                voice: Some("v".into()),
                api_key: tts.api_key.clone(),
                ..super::TtsConfig::new(super::TtsProvider::ElevenLabs)
            }
            .settings()
            .unwrap(),
        );
        let (super::tts::TtsSettings::ElevenLabs(o), super::tts::TtsSettings::ElevenLabs(d)) =
            (o, d)
        else {
            panic!("elevenlabs settings expected")
        };
        assert_eq!(
            (&o.base_url, &o.model, o.sample_rate),
            (&d.base_url, &d.model, d.sample_rate),
            "the example shows the defaults"
        );
        assert_eq!(
            (o.connect_timeout, o.first_byte_timeout, o.idle_timeout),
            (d.connect_timeout, d.first_byte_timeout, d.idle_timeout),
            "the example shows the default timeouts"
        );
        assert!(tts.build().is_ok());
        let stt = c.stt.expect("the uncommented example has an stt");
        let deepgram = |c: &super::SttConfig| match c.settings().unwrap() {
            super::stt::SttSettings::Deepgram(d) => d,
            other => panic!("{other:?}"),
        };
        let (o, d) = (
            deepgram(&stt),
            deepgram(&super::SttConfig::new(super::SttProvider::Deepgram)),
        );
        assert_eq!(
            (&o.url, &o.model, o.sample_rate, o.endpointing),
            (&d.url, &d.model, d.sample_rate, d.endpointing),
            "the example shows the default URL, model, rate and endpointing"
        );
        assert_eq!(
            (o.connect_timeout, o.idle_timeout, o.retry),
            (d.connect_timeout, d.idle_timeout, d.retry),
            "the example shows the default timeouts and retries"
        );
        assert_eq!(o.language.as_deref(), Some("en"));
        assert!(stt.build().is_ok());
    }
}
