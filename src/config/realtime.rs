//! `[realtime]`: which speech-to-speech model the agent talks through, and how to reach it.
//!
//! ```toml
//! [realtime]
//! provider = "openai"                 # OpenAI Realtime, or "gemini" for Gemini Live
//! model = "gpt-realtime"
//! voice = "marin"                     # optional: the provider's default voice
//! api_key = "${OPENAI_API_KEY}"
//! ```
//!
//! [`RealtimeConfig::build`] turns the section into a provider; [`RealtimeConfig::validate`]
//! catches mistakes when the file is loaded, naming the key.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::http::ApiKey;
use crate::providers::realtime::gemini::{self, GeminiLive, GeminiLiveConfig, GeminiLiveError};
use crate::providers::realtime::openai::{
    self, OpenAiRealtime, OpenAiRealtimeConfig, OpenAiRealtimeError,
};
use crate::providers::Realtime;

/// The speech-to-speech APIs hark speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RealtimeProvider {
    /// OpenAI's Realtime API over WebSocket.
    #[serde(rename = "openai")]
    OpenAi,
    /// Google's Gemini Live API (`BidiGenerateContent`).
    #[serde(rename = "gemini")]
    Gemini,
}

/// `[realtime]`: the speech-to-speech model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Which API to speak.
    pub provider: RealtimeProvider,
    /// The model name as the service knows it. Required: realtime model names change often,
    /// and a stale default would fail only when a call comes in.
    pub model: String,
    /// The voice; none: the provider's default (OpenAI `marin`, Gemini `Puck`).
    #[serde(default)]
    pub voice: Option<String>,
    /// The WebSocket endpoint; none: the provider's public one.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key (use `${VAR}`); none or empty: no key is sent.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// OpenAI only: the model that transcribes the user's speech; none: the provider's
    /// default (`gpt-4o-mini-transcribe`). Gemini transcribes with the model itself.
    #[serde(default)]
    pub transcription_model: Option<String>,
    /// Seconds to wait for the connection.
    #[serde(default = "RealtimeConfig::default_connect_timeout")]
    pub connect_timeout: f64,
    /// Seconds, once connected, for the service to accept the session's configuration.
    #[serde(default = "RealtimeConfig::default_setup_timeout")]
    pub setup_timeout: f64,
    /// Seconds an answer that is due may stay silent before it is given up.
    #[serde(default = "RealtimeConfig::default_timeout")]
    pub timeout: f64,
}

/// A rule a `[realtime]` section breaks, found after it was read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("realtime.{key}: {message}")]
pub struct RealtimeIssue {
    /// The offending key below `realtime`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn issue(key: &str, message: impl Into<String>) -> RealtimeIssue {
    RealtimeIssue {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a provider could not be built from a valid-looking section.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeBuildError {
    /// A rule of the section is broken.
    #[error(transparent)]
    Invalid(#[from] RealtimeIssue),
    /// The OpenAI provider refused the settings.
    #[error("realtime: {0}")]
    OpenAi(#[from] OpenAiRealtimeError),
    /// The Gemini provider refused the settings.
    #[error("realtime: {0}")]
    Gemini(#[from] GeminiLiveError),
}

/// The provider's settings, as built from the section.
#[derive(Debug, Clone)]
pub enum RealtimeSettings {
    /// OpenAI Realtime.
    OpenAi(OpenAiRealtimeConfig),
    /// Gemini Live.
    Gemini(GeminiLiveConfig),
}

impl RealtimeConfig {
    fn default_connect_timeout() -> f64 {
        5.0
    }
    fn default_setup_timeout() -> f64 {
        10.0
    }
    fn default_timeout() -> f64 {
        15.0
    }

    /// A section for `provider` and `model` with every other key at its default.
    pub fn new(provider: RealtimeProvider, model: impl Into<String>) -> Self {
        RealtimeConfig {
            provider,
            model: model.into(),
            voice: None,
            base_url: None,
            api_key: None,
            transcription_model: None,
            connect_timeout: Self::default_connect_timeout(),
            setup_timeout: Self::default_setup_timeout(),
            timeout: Self::default_timeout(),
        }
    }

    /// Checks what serde cannot (the URL, timeouts, names, the key's characters) without
    /// connecting, so loading the file catches mistakes before a session starts.
    pub fn validate(&self) -> Result<(), RealtimeIssue> {
        self.settings().map(drop)
    }

    /// The provider this section describes.
    pub fn build(&self) -> Result<Arc<dyn Realtime>, RealtimeBuildError> {
        Ok(match self.settings()? {
            RealtimeSettings::OpenAi(c) => Arc::new(OpenAiRealtime::new(c)?),
            RealtimeSettings::Gemini(c) => Arc::new(GeminiLive::new(c)?),
        })
    }

    /// The provider's settings from this section.
    pub fn settings(&self) -> Result<RealtimeSettings, RealtimeIssue> {
        if self.model.trim().is_empty() {
            return Err(issue("model", "expected a model name, got an empty string"));
        }
        if self.voice.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(issue("voice", "expected a voice name, got an empty string"));
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
        let connect_timeout = seconds("connect_timeout", self.connect_timeout)?;
        let setup_timeout = seconds("setup_timeout", self.setup_timeout)?;
        let response_timeout = seconds("timeout", self.timeout)?;
        let bad_url = |reason: String| issue("base_url", format!("expected a ws(s) URL: {reason}"));
        let bad_key = || {
            issue(
                "api_key",
                "the key holds characters that cannot be sent in a header",
            )
        };
        match self.provider {
            RealtimeProvider::OpenAi => {
                if self
                    .transcription_model
                    .as_deref()
                    .is_some_and(|m| m.trim().is_empty())
                {
                    return Err(issue(
                        "transcription_model",
                        "expected a model name, got an empty string",
                    ));
                }
                let d = OpenAiRealtimeConfig::new(self.model.clone());
                let config = OpenAiRealtimeConfig {
                    url: self.base_url.clone().unwrap_or(d.url),
                    voice: self.voice.clone().unwrap_or(d.voice),
                    api_key: self.api_key.clone(),
                    transcription_model: self.transcription_model.clone().or(d.transcription_model),
                    connect_timeout,
                    setup_timeout,
                    response_timeout,
                    model: d.model,
                };
                openai::check(&config).map_err(|e| match e {
                    OpenAiRealtimeError::InvalidUrl(r) => bad_url(r),
                    OpenAiRealtimeError::InvalidKey => bad_key(),
                })?;
                Ok(RealtimeSettings::OpenAi(config))
            }
            RealtimeProvider::Gemini => {
                if self.transcription_model.is_some() {
                    return Err(issue(
                        "transcription_model",
                        "only the openai provider takes a transcription model (Gemini transcribes with the model itself)",
                    ));
                }
                let d = GeminiLiveConfig::new(self.model.clone());
                let config = GeminiLiveConfig {
                    url: self.base_url.clone().unwrap_or(d.url),
                    voice: self.voice.clone().unwrap_or(d.voice),
                    api_key: self.api_key.clone(),
                    connect_timeout,
                    setup_timeout,
                    response_timeout,
                    model: d.model,
                };
                gemini::check(&config).map_err(|e| match e {
                    GeminiLiveError::InvalidUrl(r) => bad_url(r),
                    GeminiLiveError::InvalidKey => bad_key(),
                })?;
                Ok(RealtimeSettings::Gemini(config))
            }
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
    fn a_minimal_section_gets_each_providers_defaults() {
        let c = parse("[realtime]\nprovider = \"openai\"\nmodel = \"gpt-realtime\"\n").unwrap();
        let rt = c.realtime.unwrap();
        let RealtimeSettings::OpenAi(o) = rt.settings().unwrap() else {
            panic!("openai settings")
        };
        assert_eq!(o.url, "wss://api.openai.com/v1/realtime");
        assert_eq!((o.voice.as_str(), o.api_key), ("marin", None));
        assert_eq!(
            o.transcription_model.as_deref(),
            Some("gpt-4o-mini-transcribe")
        );
        assert_eq!(
            (o.connect_timeout, o.setup_timeout, o.response_timeout),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(15)
            )
        );
        assert_eq!(rt.build().unwrap().label(), "openai");

        let c = parse("[realtime]\nprovider = \"gemini\"\nmodel = \"gemini-live-2.5-flash-preview\"\nvoice = \"Kore\"\n")
            .unwrap();
        let rt = c.realtime.unwrap();
        let RealtimeSettings::Gemini(g) = rt.settings().unwrap() else {
            panic!("gemini settings")
        };
        assert!(g
            .url
            .starts_with("wss://generativelanguage.googleapis.com/ws/"));
        assert_eq!(g.voice, "Kore");
        let built = rt.build().unwrap();
        assert_eq!(
            (built.label(), built.input_rate(), built.output_rate()),
            ("gemini", 16_000, 24_000)
        );
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let msg = |t: &str| parse(t).unwrap_err().to_string();
        assert!(msg("[realtime]\nprovider = \"azure\"\nmodel = \"m\"\n")
            .starts_with("hark.toml:2: realtime.provider: unknown variant `azure`"));
        assert!(
            msg("[realtime]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"https://api.openai.com/v1/realtime\"\n")
                .starts_with("hark.toml:4: realtime.base_url: expected a ws(s) URL")
        );
        assert_eq!(
            msg("[realtime]\nprovider = \"gemini\"\nmodel = \"m\"\ntimeout = -1\n"),
            "hark.toml:4: realtime.timeout: expected a positive number of seconds, got -1"
        );
        assert_eq!(
            msg("[realtime]\nprovider = \"openai\"\nmodel = \" \"\n"),
            "hark.toml:3: realtime.model: expected a model name, got an empty string"
        );
        assert!(
            msg("[realtime]\nprovider = \"gemini\"\nmodel = \"m\"\ntranscription_model = \"whisper-1\"\n")
                .starts_with("hark.toml:4: realtime.transcription_model: only the openai provider")
        );
        let unknown =
            msg("[realtime]\nprovider = \"openai\"\nmodel = \"m\"\nfallback = [\"gemini\"]\n");
        assert!(
            unknown.starts_with("hark.toml:4: realtime")
                && unknown.contains("unknown field `fallback`"),
            "{unknown}"
        );
        assert!(msg("[realtime]\nprovider = \"openai\"\n").contains("missing field `model`"));
    }

    #[test]
    fn the_key_comes_from_the_environment_and_never_shows() {
        std::env::set_var("HARK_TEST_RT_KEY", "sk-rt-from-env-7");
        let c = parse(
            "[realtime]\nprovider = \"gemini\"\nmodel = \"m\"\napi_key = \"${HARK_TEST_RT_KEY}\"\n",
        )
        .unwrap();
        let rt = c.realtime.unwrap();
        assert_eq!(rt.api_key.as_ref().unwrap().expose(), "sk-rt-from-env-7");
        let RealtimeSettings::Gemini(g) = rt.settings().unwrap() else {
            panic!("gemini settings")
        };
        let shown = format!("{rt:?} {g:?} {:?}", GeminiLive::new(g.clone()).unwrap());
        assert!(!shown.contains("sk-rt-from-env-7"), "{shown}");
        assert!(shown.contains("ApiKey(***)"), "{shown}");
    }

    /// The example in `systemd/hark.toml` (commented out) is valid once uncommented and shows
    /// the defaults.
    #[test]
    fn the_shipped_example_is_valid_and_states_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/hark.toml"))
                .unwrap();
        let section: String = text
            .lines()
            .skip_while(|l| !l.starts_with("#[realtime]"))
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| !l.is_empty() && !l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(section.starts_with("[realtime]"), "{section}");
        std::env::set_var("OPENAI_API_KEY", "example-value");
        let c = parse(&section).unwrap();
        let rt = c.realtime.unwrap();
        let d = RealtimeConfig::new(rt.provider, rt.model.clone());
        assert_eq!(
            (rt.connect_timeout, rt.setup_timeout, rt.timeout),
            (d.connect_timeout, d.setup_timeout, d.timeout),
            "the example shows the default timeouts"
        );
        let RealtimeSettings::OpenAi(o) = rt.settings().unwrap() else {
            panic!("the example uses openai")
        };
        let defaults = OpenAiRealtimeConfig::new("m");
        assert_eq!(
            (o.url, o.voice, o.transcription_model),
            (defaults.url, defaults.voice, defaults.transcription_model),
            "the example shows the default URL, voice and transcription model"
        );
        assert!(rt.build().is_ok());
    }
}
