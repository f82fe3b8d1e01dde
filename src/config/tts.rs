//! `[tts]`: which voice speaks the agent's replies, and how to reach it.
//!
//! ```toml
//! [tts]
//! provider = "elevenlabs"             # or "openai", "cartesia", "espeak" (offline)
//! voice = "21m00Tcm4TlvDq8ikWAM"      # the provider's voice ID or name
//! api_key = "${ELEVENLABS_API_KEY}"   # espeak needs none
//! ```
//!
//! One section serves every provider: the common keys (`voice`, `model`, `base_url`,
//! `api_key`, `sample_rate`, `speed`, `language`, the timeouts) mean the same everywhere and
//! get each provider's defaults; a key only one provider reads (`instructions`, `stability`,
//! `api_version`, `program`, …) is an error with another provider, so a copied section cannot
//! silently do nothing. [`TtsConfig::build`] turns the section into a provider;
//! [`TtsConfig::validate`] catches mistakes when the file is loaded, naming the key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::fallback::{FallbackPolicy, FallbackTts};

use crate::providers::http::{ApiKey, RetryPolicy};
use crate::providers::tts::{
    cartesia, elevenlabs, espeak, openai, CartesiaConfig, CartesiaTts, ElevenLabsConfig,
    ElevenLabsTts, EspeakConfig, EspeakTts, OpenAiTts, OpenAiTtsConfig, TtsSetupError,
};
use crate::providers::Tts;

/// The speech services hark speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TtsProvider {
    /// ElevenLabs' stream-input WebSocket.
    #[serde(rename = "elevenlabs")]
    ElevenLabs,
    /// OpenAI's `audio/speech` (also LAN servers with the same route, through `base_url`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Cartesia's TTS WebSocket.
    #[serde(rename = "cartesia")]
    Cartesia,
    /// The `espeak-ng` program: offline, no key.
    #[serde(rename = "espeak")]
    Espeak,
}

impl TtsProvider {
    fn name(self) -> &'static str {
        match self {
            TtsProvider::ElevenLabs => "elevenlabs",
            TtsProvider::OpenAi => "openai",
            TtsProvider::Cartesia => "cartesia",
            TtsProvider::Espeak => "espeak",
        }
    }
}

/// `[tts]`: the voice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsConfig {
    /// Which service to speak through.
    pub provider: TtsProvider,
    /// The voice: an ID (ElevenLabs, Cartesia: required), a name (OpenAI: default `alloy`;
    /// espeak: default `en`).
    #[serde(default)]
    pub voice: Option<String>,
    /// The model; none: the provider's default (not used by espeak).
    #[serde(default)]
    pub model: Option<String>,
    /// The API root; none: the provider's public endpoint (not used by espeak).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key (use `${VAR}`); required by ElevenLabs and Cartesia, optional for OpenAI
    /// (LAN servers need none), not used by espeak.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// The rate audio is asked for, in Hz; none: the provider's default (24000; espeak speaks
    /// at 22050 only).
    #[serde(default)]
    pub sample_rate: Option<u32>,
    /// Speaking speed relative to normal (1.0); each provider has its own range.
    #[serde(default)]
    pub speed: Option<f64>,
    /// The language to speak (`en`, `de`, …), for ElevenLabs and Cartesia; none: the
    /// service's choice.
    #[serde(default)]
    pub language: Option<String>,
    /// OpenAI only: how to speak (tone, pace), for models that take instructions.
    #[serde(default)]
    pub instructions: Option<String>,
    /// ElevenLabs only: voice stability, 0 to 1.
    #[serde(default)]
    pub stability: Option<f64>,
    /// ElevenLabs only: voice similarity boost, 0 to 1.
    #[serde(default)]
    pub similarity_boost: Option<f64>,
    /// ElevenLabs only: characters buffered before audio is generated within a sentence.
    #[serde(default)]
    pub chunk_length_schedule: Option<Vec<u32>>,
    /// Cartesia only: the API version date; none: [`cartesia::DEFAULT_API_VERSION`].
    #[serde(default)]
    pub api_version: Option<String>,
    /// espeak only: the program; none: `espeak-ng` on `PATH`.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// Seconds the audio may stall (no message, no byte) before it is given up.
    #[serde(default = "TtsConfig::default_timeout")]
    pub timeout: f64,
    /// Seconds to wait for the connection.
    #[serde(default = "TtsConfig::default_connect_timeout")]
    pub connect_timeout: f64,
    /// Seconds from sending text to the first audio it brings.
    #[serde(default = "TtsConfig::default_first_byte_timeout")]
    pub first_byte_timeout: f64,
    /// OpenAI only: tries per sentence when the service is rate limited or unavailable
    /// (1 = no retry).
    #[serde(default = "TtsConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// Providers to switch to, in order, when this one fails (see
    /// [`crate::providers::fallback`]): tables with the same keys as this section
    /// (`[[tts.fallback]]`), without fallbacks of their own.
    #[serde(default)]
    pub fallback: Vec<TtsConfig>,
}

/// A rule a `[tts]` section breaks, found after it was read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tts.{key}: {message}")]
pub struct TtsIssue {
    /// The offending key below `tts`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn issue(key: &str, message: impl Into<String>) -> TtsIssue {
    TtsIssue {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a provider could not be built from a valid-looking section.
#[derive(Debug, thiserror::Error)]
pub enum TtsBuildError {
    /// A rule of the section is broken.
    #[error(transparent)]
    Invalid(#[from] TtsIssue),
    /// The provider refused the settings.
    #[error("tts: {0}")]
    Setup(#[from] TtsSetupError),
}

/// One provider's settings, ready to build.
#[derive(Debug, Clone)]
pub enum TtsSettings {
    /// ElevenLabs.
    ElevenLabs(ElevenLabsConfig),
    /// OpenAI `audio/speech`.
    OpenAi(OpenAiTtsConfig),
    /// Cartesia.
    Cartesia(CartesiaConfig),
    /// espeak-ng.
    Espeak(EspeakConfig),
}

impl TtsConfig {
    fn default_timeout() -> f64 {
        10.0
    }
    fn default_connect_timeout() -> f64 {
        5.0
    }
    fn default_first_byte_timeout() -> f64 {
        10.0
    }
    fn default_max_attempts() -> u32 {
        RetryPolicy::default().max_attempts
    }

    /// A section for `provider` with every other key at its default.
    pub fn new(provider: TtsProvider) -> Self {
        TtsConfig {
            provider,
            voice: None,
            model: None,
            base_url: None,
            api_key: None,
            sample_rate: None,
            speed: None,
            language: None,
            instructions: None,
            stability: None,
            similarity_boost: None,
            chunk_length_schedule: None,
            api_version: None,
            program: None,
            timeout: Self::default_timeout(),
            connect_timeout: Self::default_connect_timeout(),
            first_byte_timeout: Self::default_first_byte_timeout(),
            max_attempts: Self::default_max_attempts(),
            fallback: Vec::new(),
        }
    }

    /// Checks what serde cannot (ranges, URLs, which keys the provider reads) without building
    /// anything, so loading the file catches mistakes before a session starts.
    pub fn validate(&self) -> Result<(), TtsIssue> {
        self.settings()?;
        for (i, f) in self.fallback.iter().enumerate() {
            if !f.fallback.is_empty() {
                return Err(issue(
                    &format!("fallback[{i}].fallback"),
                    "a fallback has no fallbacks of its own: list them all, in order, under the section",
                ));
            }
            f.validate()
                .map_err(|e| issue(&format!("fallback[{i}].{}", e.key), e.message))?;
        }
        Ok(())
    }

    /// The provider this section describes.
    pub fn build(&self) -> Result<Arc<dyn Tts>, TtsBuildError> {
        Ok(match self.settings()? {
            TtsSettings::ElevenLabs(c) => Arc::new(ElevenLabsTts::new(c)?),
            TtsSettings::OpenAi(c) => Arc::new(OpenAiTts::new(c)?),
            TtsSettings::Cartesia(c) => Arc::new(CartesiaTts::new(c)?),
            TtsSettings::Espeak(c) => Arc::new(EspeakTts::new(c)?),
        })
    }

    /// This provider, or, when the section lists fallbacks, a [`FallbackTts`] over it and them
    /// with `policy`.
    pub fn build_chain(&self, policy: FallbackPolicy) -> Result<Arc<dyn Tts>, TtsBuildError> {
        let primary = self.build()?;
        if self.fallback.is_empty() {
            return Ok(primary);
        }
        let mut chain = vec![primary];
        for f in &self.fallback {
            chain.push(f.build()?);
        }
        Ok(Arc::new(
            FallbackTts::new(chain, policy).expect("the chain holds the primary"),
        ))
    }

    /// The chosen provider's settings from this section, checked.
    pub fn settings(&self) -> Result<TtsSettings, TtsIssue> {
        let provider = self.provider;
        let only = |key: &str, set: bool, for_: TtsProvider| {
            if set && provider != for_ {
                Err(issue(
                    key,
                    format!(
                        "only used with provider = \"{}\" (this section uses \"{}\")",
                        for_.name(),
                        provider.name()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        only(
            "instructions",
            self.instructions.is_some(),
            TtsProvider::OpenAi,
        )?;
        only(
            "max_attempts",
            self.max_attempts != Self::default_max_attempts(),
            TtsProvider::OpenAi,
        )?;
        only(
            "stability",
            self.stability.is_some(),
            TtsProvider::ElevenLabs,
        )?;
        only(
            "similarity_boost",
            self.similarity_boost.is_some(),
            TtsProvider::ElevenLabs,
        )?;
        only(
            "chunk_length_schedule",
            self.chunk_length_schedule.is_some(),
            TtsProvider::ElevenLabs,
        )?;
        only(
            "api_version",
            self.api_version.is_some(),
            TtsProvider::Cartesia,
        )?;
        only("program", self.program.is_some(), TtsProvider::Espeak)?;
        if provider == TtsProvider::Espeak {
            for (key, set) in [
                ("model", self.model.is_some()),
                ("base_url", self.base_url.is_some()),
                ("api_key", self.api_key.is_some()),
                ("language", self.language.is_some()),
            ] {
                if set {
                    return Err(issue(
                        key,
                        "not used with provider = \"espeak\" (the voice picks the language)",
                    ));
                }
            }
            if let Some(rate) = self.sample_rate.filter(|&r| r != espeak::SAMPLE_RATE) {
                return Err(issue(
                    "sample_rate",
                    format!(
                        "espeak-ng speaks at {} Hz only, got {rate}",
                        espeak::SAMPLE_RATE
                    ),
                ));
            }
        }
        if provider == TtsProvider::OpenAi && self.language.is_some() {
            return Err(issue(
                "language",
                "not used with provider = \"openai\" (the model follows the text's language)",
            ));
        }
        let seconds = |key: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    issue(
                        key,
                        format!("expected a positive number of seconds, got {v}"),
                    )
                })
        };
        let idle = seconds("timeout", self.timeout)?;
        let connect = seconds("connect_timeout", self.connect_timeout)?;
        let first_byte = seconds("first_byte_timeout", self.first_byte_timeout)?;
        if !(1..=10).contains(&self.max_attempts) {
            return Err(issue(
                "max_attempts",
                format!("expected 1 to 10 attempts, got {}", self.max_attempts),
            ));
        }
        let text = |key: &str, v: &Option<String>| match v {
            Some(s) if s.trim().is_empty() => {
                Err(issue(key, "expected a value, got an empty string"))
            }
            _ => Ok(v.clone()),
        };
        let voice = text("voice", &self.voice)?;
        let model = text("model", &self.model)?;
        let required_voice = || {
            voice.clone().ok_or_else(|| {
                issue(
                    "voice",
                    format!("provider \"{}\" needs a voice ID", provider.name()),
                )
            })
        };
        let settings = match provider {
            TtsProvider::ElevenLabs => {
                let mut c = ElevenLabsConfig::new(required_voice()?);
                c.base_url = self.base_url.clone().unwrap_or(c.base_url);
                c.model = model.unwrap_or(c.model);
                c.api_key = self.api_key.clone();
                c.sample_rate = self.sample_rate.unwrap_or(c.sample_rate);
                c.language = self.language.clone();
                c.stability = self.stability;
                c.similarity_boost = self.similarity_boost;
                c.speed = self.speed;
                c.chunk_length_schedule = self.chunk_length_schedule.clone();
                c.connect_timeout = connect;
                c.first_byte_timeout = first_byte;
                c.idle_timeout = idle;
                elevenlabs::check(&c).map_err(|e| self.setup_issue(e))?;
                TtsSettings::ElevenLabs(c)
            }
            TtsProvider::OpenAi => {
                let mut c = OpenAiTtsConfig::new();
                c.base_url = self.base_url.clone().unwrap_or(c.base_url);
                c.model = model.unwrap_or(c.model);
                c.voice = voice.unwrap_or(c.voice);
                c.api_key = self.api_key.clone();
                c.speed = self.speed;
                c.instructions = self.instructions.clone();
                c.sample_rate = self.sample_rate.unwrap_or(c.sample_rate);
                c.connect_timeout = connect;
                c.first_byte_timeout = first_byte;
                c.idle_timeout = idle;
                c.retry = RetryPolicy {
                    max_attempts: self.max_attempts,
                    ..RetryPolicy::default()
                };
                openai::check(&c).map_err(|e| self.setup_issue(e))?;
                TtsSettings::OpenAi(c)
            }
            TtsProvider::Cartesia => {
                let mut c = CartesiaConfig::new(required_voice()?);
                c.base_url = self.base_url.clone().unwrap_or(c.base_url);
                c.model = model.unwrap_or(c.model);
                c.api_key = self.api_key.clone();
                c.api_version = text("api_version", &self.api_version)?.unwrap_or(c.api_version);
                c.sample_rate = self.sample_rate.unwrap_or(c.sample_rate);
                c.language = self.language.clone();
                c.speed = self.speed;
                c.connect_timeout = connect;
                c.first_byte_timeout = first_byte;
                c.idle_timeout = idle;
                cartesia::check(&c).map_err(|e| self.setup_issue(e))?;
                TtsSettings::Cartesia(c)
            }
            TtsProvider::Espeak => {
                let mut c = EspeakConfig::default();
                c.program = self.program.clone().unwrap_or(c.program);
                c.voice = voice.unwrap_or(c.voice);
                c.speed = self.speed;
                c.timeout = idle;
                espeak::check(&c).map_err(|e| self.setup_issue(e))?;
                TtsSettings::Espeak(c)
            }
        };
        Ok(settings)
    }

    /// The key a provider's refusal is about, from its message.
    fn setup_issue(&self, e: TtsSetupError) -> TtsIssue {
        match e {
            TtsSetupError::InvalidBaseUrl(reason) => issue(
                "base_url",
                format!("expected a {} URL: {reason}", self.url_kind()),
            ),
            TtsSetupError::MissingKey => issue(
                "api_key",
                format!("provider \"{}\" needs an API key", self.provider.name()),
            ),
            TtsSetupError::InvalidKey => issue(
                "api_key",
                "the key holds characters that cannot be sent in a header",
            ),
            TtsSetupError::HttpClient(e) => issue("provider", e.to_string()),
            TtsSetupError::Invalid { key, message } => issue(key, message),
        }
    }

    fn url_kind(&self) -> &'static str {
        match self.provider {
            TtsProvider::OpenAi => "http(s)",
            _ => "ws(s)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("hark.toml"))
    }

    #[test]
    fn each_provider_gets_its_defaults() {
        let c = parse("[tts]\nprovider = \"openai\"\n").unwrap();
        let TtsSettings::OpenAi(o) = c.tts.as_ref().unwrap().settings().unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                o.base_url.as_str(),
                o.model.as_str(),
                o.voice.as_str(),
                o.sample_rate
            ),
            (
                "https://api.openai.com/v1",
                "gpt-4o-mini-tts",
                "alloy",
                24_000
            )
        );
        assert_eq!(
            (
                o.connect_timeout,
                o.first_byte_timeout,
                o.idle_timeout,
                o.retry.max_attempts
            ),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(10),
                3
            )
        );
        assert_eq!(c.tts.unwrap().build().unwrap().label(), "openai");

        let c = parse("[tts]\nprovider = \"espeak\"\n").unwrap();
        let tts = c.tts.unwrap().build().unwrap();
        assert_eq!((tts.label(), tts.sample_rate()), ("espeak", 22_050));

        let c = parse(
            "[tts]\nprovider = \"elevenlabs\"\nvoice = \"v1\"\napi_key = \"k\"\nsample_rate = 16000\n",
        )
        .unwrap();
        let tts = c.tts.unwrap().build().unwrap();
        assert_eq!((tts.label(), tts.sample_rate()), ("elevenlabs", 16_000));

        let c = parse("[tts]\nprovider = \"cartesia\"\nvoice = \"v1\"\napi_key = \"k\"\n").unwrap();
        let TtsSettings::Cartesia(o) = c.tts.as_ref().unwrap().settings().unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.model.as_str(), o.api_version.as_str(), o.sample_rate),
            ("sonic-3", "2025-04-16", 24_000)
        );
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let msg = |t: &str| parse(t).unwrap_err().to_string();
        assert!(msg("[tts]\nprovider = \"polly\"\n")
            .starts_with("hark.toml:2: tts.provider: unknown variant `polly`"));
        assert_eq!(
            msg("[tts]\nprovider = \"elevenlabs\"\napi_key = \"k\"\n"),
            "hark.toml: tts.voice: provider \"elevenlabs\" needs a voice ID"
        );
        assert_eq!(
            msg("[tts]\nprovider = \"cartesia\"\nvoice = \"v\"\n"),
            "hark.toml: tts.api_key: provider \"cartesia\" needs an API key"
        );
        assert_eq!(
            msg("[tts]\nprovider = \"openai\"\nspeed = 9.0\n"),
            "hark.toml:3: tts.speed: speed must be between 0.25 and 4, got 9"
        );
        assert_eq!(
            msg("[tts]\nprovider = \"elevenlabs\"\nvoice = \"v\"\napi_key = \"k\"\nsample_rate = 11025\n"),
            "hark.toml:5: tts.sample_rate: sample rate 11025 is not one of ElevenLabs' PCM rates [8000, 16000, 22050, 24000, 32000, 44100, 48000]"
        );
        assert_eq!(
            msg("[tts]\nprovider = \"espeak\"\nsample_rate = 24000\n"),
            "hark.toml:3: tts.sample_rate: espeak-ng speaks at 22050 Hz only, got 24000"
        );
        assert_eq!(
            msg("[tts]\nprovider = \"espeak\"\ninstructions = \"be kind\"\n"),
            "hark.toml:3: tts.instructions: only used with provider = \"openai\" (this section uses \"espeak\")"
        );
        assert!(
            msg("[tts]\nprovider = \"cartesia\"\nvoice = \"v\"\napi_key = \"k\"\nbase_url = \"https://x\"\n")
                .starts_with("hark.toml:5: tts.base_url: expected a ws(s) URL")
        );
        assert!(msg("[tts]\nprovider = \"openai\"\ntimeout = 0\n")
            .starts_with("hark.toml:3: tts.timeout: expected a positive number"));
        let unknown = msg("[tts]\nprovider = \"openai\"\nvolume = 2\n");
        assert!(
            unknown.starts_with("hark.toml:3: tts") && unknown.contains("unknown field `volume`"),
            "{unknown}"
        );
    }

    #[test]
    fn the_key_comes_from_the_environment_and_never_shows() {
        std::env::set_var("HARK_TEST_TTS_KEY", "xi-from-env-42");
        let c = parse(
            "[tts]\nprovider = \"elevenlabs\"\nvoice = \"v\"\napi_key = \"${HARK_TEST_TTS_KEY}\"\n",
        )
        .unwrap();
        let tts = c.tts.unwrap();
        assert_eq!(tts.api_key.as_ref().unwrap().expose(), "xi-from-env-42");
        let TtsSettings::ElevenLabs(settings) = tts.settings().unwrap() else {
            panic!()
        };
        let provider = ElevenLabsTts::new(settings.clone()).unwrap();
        let shown = format!("{tts:?} {settings:?} {provider:?}");
        assert!(!shown.contains("xi-from-env-42"), "{shown}");
        assert!(shown.contains("ApiKey(***)"), "{shown}");
    }
}
