//! `[stt]`: which speech-to-text service transcribes the user, and how to reach it.
//!
//! ```toml
//! [stt]
//! provider = "deepgram"               # "deepgram" | "assemblyai" (streaming) | "openai" (per utterance)
//! model = "nova-3"                    # optional: each provider has a default
//! language = "en"                     # optional (deepgram, openai)
//! api_key = "${DEEPGRAM_API_KEY}"
//! ```
//!
//! [`SttConfig::build`] turns the section into a provider; [`SttConfig::validate`] catches
//! mistakes when the file is loaded, naming the key. Keys that only one provider reads
//! (`endpointing_ms`, `format_turns`, `prompt`, `max_utterance`) are refused for the others, so a
//! setting that would do nothing is reported rather than ignored.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::fallback::{FallbackPolicy, FallbackStt};

use crate::audio::wav::RATES;
use crate::providers::http::{ApiKey, RetryPolicy};
use crate::providers::stt::{
    assemblyai, deepgram, openai, AssemblyAiConfig, AssemblyAiStt, DeepgramConfig, DeepgramStt,
    OpenAiStt, OpenAiSttConfig, SttSetupError,
};
use crate::providers::Stt;

/// The speech-to-text APIs hark speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SttProvider {
    /// Deepgram live streaming (WebSocket; interim and final transcripts).
    #[serde(rename = "deepgram")]
    Deepgram,
    /// OpenAI audio transcriptions, one request per utterance (also LAN whisper servers
    /// through `base_url`).
    #[serde(rename = "openai")]
    OpenAi,
    /// AssemblyAI Universal-Streaming v3 (WebSocket; turns, preflight when unformatted).
    #[serde(rename = "assemblyai")]
    AssemblyAi,
}

impl SttProvider {
    fn name(self) -> &'static str {
        match self {
            SttProvider::Deepgram => "deepgram",
            SttProvider::OpenAi => "openai",
            SttProvider::AssemblyAi => "assemblyai",
        }
    }
}

/// `[stt]`: the speech-to-text service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttConfig {
    /// Which API to speak.
    pub provider: SttProvider,
    /// The model; none: the provider's default (`nova-3`, `whisper-1`,
    /// `universal-streaming-english`).
    #[serde(default)]
    pub model: Option<String>,
    /// The language of the audio; none: the model's default or detection. AssemblyAI picks
    /// languages by model instead.
    #[serde(default)]
    pub language: Option<String>,
    /// The endpoint (`wss://…` for the streaming providers, the API root `https://…/v1` for
    /// openai); none: the provider's public endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key (use `${VAR}`); none or empty: no key is sent.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// The rate of the audio sent, in Hz.
    #[serde(default = "SttConfig::default_sample_rate")]
    pub sample_rate: u32,
    /// Seconds to wait for the connection.
    #[serde(default = "SttConfig::default_connect_timeout")]
    pub connect_timeout: f64,
    /// Streaming: seconds the service may stay silent (pings unanswered) before the stream is
    /// given up. openai: seconds one request may take.
    #[serde(default = "SttConfig::default_timeout")]
    pub timeout: f64,
    /// Tries per connection or request when the service is rate limited or unavailable.
    #[serde(default = "SttConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// deepgram: milliseconds of silence after which a segment is final (0: off); default 300.
    #[serde(default)]
    pub endpointing_ms: Option<u32>,
    /// assemblyai: punctuated, cased finals (off: earlier finals, and preflight transcripts);
    /// default true.
    #[serde(default)]
    pub format_turns: Option<bool>,
    /// openai: text that guides spelling and style (names, jargon).
    #[serde(default)]
    pub prompt: Option<String>,
    /// openai: the longest utterance kept, in seconds (older audio is dropped); default 30.
    #[serde(default)]
    pub max_utterance: Option<f64>,
    /// Providers to switch to, in order, when this one fails (see
    /// [`crate::providers::fallback`]): tables with the same keys as this section
    /// (`[[stt.fallback]]`), without fallbacks of their own.
    #[serde(default)]
    pub fallback: Vec<SttConfig>,
}

/// A rule an `[stt]` section breaks, found after it was read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("stt.{key}: {message}")]
pub struct SttIssue {
    /// The offending key below `stt`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn issue(key: &str, message: impl Into<String>) -> SttIssue {
    SttIssue {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a provider could not be built from a valid-looking section.
#[derive(Debug, thiserror::Error)]
pub enum SttBuildError {
    /// A rule of the section is broken.
    #[error(transparent)]
    Invalid(#[from] SttIssue),
    /// The provider refused the settings.
    #[error("stt: {0}")]
    Setup(#[from] SttSetupError),
}

/// One provider's settings, checked.
#[derive(Debug, Clone)]
pub enum SttSettings {
    /// Deepgram live streaming.
    Deepgram(DeepgramConfig),
    /// OpenAI audio transcriptions.
    OpenAi(OpenAiSttConfig),
    /// AssemblyAI Universal-Streaming.
    AssemblyAi(AssemblyAiConfig),
}

impl SttConfig {
    fn default_sample_rate() -> u32 {
        16_000
    }
    fn default_connect_timeout() -> f64 {
        5.0
    }
    fn default_timeout() -> f64 {
        10.0
    }
    fn default_max_attempts() -> u32 {
        RetryPolicy::default().max_attempts
    }

    /// A section for `provider` with every other key at its default.
    pub fn new(provider: SttProvider) -> Self {
        SttConfig {
            provider,
            model: None,
            language: None,
            base_url: None,
            api_key: None,
            sample_rate: Self::default_sample_rate(),
            connect_timeout: Self::default_connect_timeout(),
            timeout: Self::default_timeout(),
            max_attempts: Self::default_max_attempts(),
            endpointing_ms: None,
            format_turns: None,
            prompt: None,
            max_utterance: None,
            fallback: Vec::new(),
        }
    }

    /// Checks what serde cannot (ranges, the URL, keys meant for another provider) without
    /// building anything, so loading the file catches mistakes before a session starts.
    pub fn validate(&self) -> Result<(), SttIssue> {
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

    /// The provider this section describes. The fallback wrapper can hold it as is.
    pub fn build(&self) -> Result<Arc<dyn Stt>, SttBuildError> {
        Ok(match self.settings()? {
            SttSettings::Deepgram(c) => Arc::new(DeepgramStt::new(c)?),
            SttSettings::OpenAi(c) => Arc::new(OpenAiStt::new(c)?),
            SttSettings::AssemblyAi(c) => Arc::new(AssemblyAiStt::new(c)?),
        })
    }

    /// This provider, or, when the section lists fallbacks, a [`FallbackStt`] over it and them
    /// with `policy`.
    pub fn build_chain(&self, policy: FallbackPolicy) -> Result<Arc<dyn Stt>, SttBuildError> {
        let primary = self.build()?;
        if self.fallback.is_empty() {
            return Ok(primary);
        }
        let mut chain = vec![primary];
        for f in &self.fallback {
            chain.push(f.build()?);
        }
        Ok(Arc::new(
            FallbackStt::new(chain, policy).expect("the chain holds the primary"),
        ))
    }

    /// The chosen provider's settings from this section.
    pub fn settings(&self) -> Result<SttSettings, SttIssue> {
        let provider = self.provider;
        let only = |key: &str, set: bool, for_provider: SttProvider| {
            if set && provider != for_provider {
                Err(issue(
                    key,
                    format!(
                        "applies to provider = \"{}\" only, not \"{}\"",
                        for_provider.name(),
                        provider.name()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        only(
            "endpointing_ms",
            self.endpointing_ms.is_some(),
            SttProvider::Deepgram,
        )?;
        only(
            "format_turns",
            self.format_turns.is_some(),
            SttProvider::AssemblyAi,
        )?;
        only("prompt", self.prompt.is_some(), SttProvider::OpenAi)?;
        only(
            "max_utterance",
            self.max_utterance.is_some(),
            SttProvider::OpenAi,
        )?;
        if let Some(m) = &self.model {
            if m.trim().is_empty() {
                return Err(issue("model", "expected a model name, got an empty string"));
            }
        }
        if let Some(l) = &self.language {
            if provider == SttProvider::AssemblyAi {
                return Err(issue(
                    "language",
                    "assemblyai chooses languages by model: leave language out and set \
                     model = \"universal-streaming-multilingual\" for languages other than English",
                ));
            }
            if l.trim().is_empty() || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(issue(
                    "language",
                    format!("expected a language code like \"en\" or \"en-US\", got {l:?}"),
                ));
            }
        }
        if !RATES.contains(&self.sample_rate) {
            return Err(issue(
                "sample_rate",
                format!(
                    "expected {} to {} Hz, got {}",
                    RATES.start(),
                    RATES.end(),
                    self.sample_rate
                ),
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
        let connect_timeout = seconds("connect_timeout", self.connect_timeout)?;
        let timeout = seconds("timeout", self.timeout)?;
        if !(1..=10).contains(&self.max_attempts) {
            return Err(issue(
                "max_attempts",
                format!("expected 1 to 10 attempts, got {}", self.max_attempts),
            ));
        }
        let retry = RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        };
        let setup = |e: SttSetupError| match e {
            SttSetupError::InvalidUrl(reason) => issue("base_url", reason),
            SttSetupError::InvalidKey => issue(
                "api_key",
                "the key holds characters that cannot be sent in a header",
            ),
            SttSetupError::HttpClient(e) => issue("provider", e.to_string()),
        };
        let model = |default: &str| self.model.clone().unwrap_or_else(|| default.to_owned());
        let url = |default: &str| self.base_url.clone().unwrap_or_else(|| default.to_owned());
        Ok(match provider {
            SttProvider::Deepgram => {
                let endpointing = match self.endpointing_ms {
                    None => DeepgramConfig::new().endpointing,
                    Some(0) => None,
                    Some(ms) if ms <= 10_000 => Some(Duration::from_millis(ms.into())),
                    Some(ms) => {
                        return Err(issue(
                            "endpointing_ms",
                            format!("expected 0 (off) to 10000 ms, got {ms}"),
                        ))
                    }
                };
                let c = DeepgramConfig {
                    url: url(deepgram::DEFAULT_URL),
                    model: model(deepgram::DEFAULT_MODEL),
                    language: self.language.clone(),
                    api_key: self.api_key.clone(),
                    sample_rate: self.sample_rate,
                    endpointing,
                    connect_timeout,
                    idle_timeout: timeout,
                    retry,
                };
                deepgram::check(&c).map_err(|e| ws_url_issue(setup(e)))?;
                SttSettings::Deepgram(c)
            }
            SttProvider::AssemblyAi => {
                let c = AssemblyAiConfig {
                    url: url(assemblyai::DEFAULT_URL),
                    model: model(assemblyai::DEFAULT_MODEL),
                    api_key: self.api_key.clone(),
                    sample_rate: self.sample_rate,
                    format_turns: self.format_turns.unwrap_or(true),
                    connect_timeout,
                    idle_timeout: timeout,
                    retry,
                };
                assemblyai::check(&c).map_err(|e| ws_url_issue(setup(e)))?;
                SttSettings::AssemblyAi(c)
            }
            SttProvider::OpenAi => {
                let max_utterance = match self.max_utterance {
                    None => OpenAiSttConfig::new().max_utterance,
                    Some(s) if (1.0..=600.0).contains(&s) => Duration::from_secs_f64(s),
                    Some(s) => {
                        return Err(issue(
                            "max_utterance",
                            format!("expected 1 to 600 seconds, got {s}"),
                        ))
                    }
                };
                let c = OpenAiSttConfig {
                    base_url: url(openai::DEFAULT_BASE_URL),
                    model: model(openai::DEFAULT_MODEL),
                    language: self.language.clone(),
                    prompt: self.prompt.clone(),
                    api_key: self.api_key.clone(),
                    sample_rate: self.sample_rate,
                    max_utterance,
                    connect_timeout,
                    timeout,
                    retry,
                };
                openai::check(&c).map_err(|e| match setup(e) {
                    i if i.key == "base_url" => issue(
                        "base_url",
                        format!("expected an http(s) URL: {}", i.message),
                    ),
                    i => i,
                })?;
                SttSettings::OpenAi(c)
            }
        })
    }
}

/// A URL issue for a streaming provider, saying what is expected.
fn ws_url_issue(i: SttIssue) -> SttIssue {
    if i.key == "base_url" {
        issue(
            "base_url",
            format!("expected a ws:// or wss:// URL: {}", i.message),
        )
    } else {
        i
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
        let c = parse("[stt]\nprovider = \"deepgram\"\n").unwrap();
        let stt = c.stt.unwrap();
        let SttSettings::Deepgram(d) = stt.settings().unwrap() else {
            panic!()
        };
        assert_eq!(
            (d.url.as_str(), d.model.as_str(), d.sample_rate),
            ("wss://api.deepgram.com/v1/listen", "nova-3", 16_000)
        );
        assert_eq!(d.endpointing, Some(Duration::from_millis(300)));
        assert_eq!(
            (d.connect_timeout, d.idle_timeout, d.retry.max_attempts),
            (Duration::from_secs(5), Duration::from_secs(10), 3)
        );
        assert_eq!(stt.build().unwrap().label(), "deepgram");

        let c = parse("[stt]\nprovider = \"openai\"\n").unwrap();
        let SttSettings::OpenAi(o) = c.stt.as_ref().unwrap().settings().unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.base_url.as_str(), o.model.as_str()),
            ("https://api.openai.com/v1", "whisper-1")
        );
        assert_eq!(o.max_utterance, Duration::from_secs(30));
        assert_eq!(c.stt.unwrap().build().unwrap().label(), "openai");

        let c = parse("[stt]\nprovider = \"assemblyai\"\n").unwrap();
        let SttSettings::AssemblyAi(a) = c.stt.as_ref().unwrap().settings().unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.url.as_str(), a.model.as_str(), a.format_turns),
            (
                "wss://streaming.assemblyai.com/v3/ws",
                "universal-streaming-english",
                true
            )
        );
        assert_eq!(c.stt.unwrap().build().unwrap().label(), "assemblyai");
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let msg = |t: &str| parse(t).unwrap_err().to_string();
        assert!(msg("[stt]\nprovider = \"google\"\n")
            .starts_with("hark.toml:2: stt.provider: unknown variant `google`"));
        assert_eq!(
            msg("[stt]\nprovider = \"deepgram\"\nsample_rate = 96000\n"),
            "hark.toml:3: stt.sample_rate: expected 8000 to 48000 Hz, got 96000"
        );
        assert_eq!(
            msg("[stt]\nprovider = \"openai\"\n\nendpointing_ms = 200\n"),
            "hark.toml:4: stt.endpointing_ms: applies to provider = \"deepgram\" only, not \"openai\""
        );
        assert_eq!(
            msg("[stt]\nprovider = \"deepgram\"\nformat_turns = false\n"),
            "hark.toml:3: stt.format_turns: applies to provider = \"assemblyai\" only, not \"deepgram\""
        );
        assert!(
            msg("[stt]\nprovider = \"deepgram\"\nbase_url = \"https://api.deepgram.com\"\n")
                .starts_with("hark.toml:3: stt.base_url: expected a ws:// or wss:// URL")
        );
        assert!(
            msg("[stt]\nprovider = \"openai\"\nbase_url = \"ws://x/v1\"\n")
                .starts_with("hark.toml:3: stt.base_url: expected an http(s) URL")
        );
        assert!(msg("[stt]\nprovider = \"assemblyai\"\nlanguage = \"de\"\n")
            .starts_with("hark.toml:3: stt.language: assemblyai chooses languages by model"));
        assert!(msg("[stt]\nprovider = \"deepgram\"\ntimeout = -1\n")
            .starts_with("hark.toml:3: stt.timeout: expected a positive number"));
        assert!(msg("[stt]\nprovider = \"openai\"\nmax_utterance = 0.1\n")
            .starts_with("hark.toml:3: stt.max_utterance: expected 1 to 600 seconds"));
        let unknown = msg("[stt]\nprovider = \"deepgram\"\nkey = \"x\"\n");
        assert!(
            unknown.starts_with("hark.toml:3: stt") && unknown.contains("unknown field `key`"),
            "{unknown}"
        );
    }

    #[test]
    fn provider_keys_reach_the_provider() {
        let c = parse(
            "[stt]\nprovider = \"deepgram\"\nendpointing_ms = 0\nlanguage = \"en-US\"\nmodel = \"nova-2-phonecall\"\nsample_rate = 8000\n",
        )
        .unwrap();
        let SttSettings::Deepgram(d) = c.stt.unwrap().settings().unwrap() else {
            panic!()
        };
        assert_eq!(d.endpointing, None, "0 turns endpointing off");
        assert_eq!(
            (d.language.as_deref(), d.model.as_str(), d.sample_rate),
            (Some("en-US"), "nova-2-phonecall", 8000)
        );
        let c = parse(
            "[stt]\nprovider = \"openai\"\nbase_url = \"http://192.168.1.5:8000/v1\"\nprompt = \"Grand Hotel\"\nmax_utterance = 20\ntimeout = 30\n",
        )
        .unwrap();
        let SttSettings::OpenAi(o) = c.stt.unwrap().settings().unwrap() else {
            panic!()
        };
        assert_eq!(o.prompt.as_deref(), Some("Grand Hotel"));
        assert_eq!(
            (o.max_utterance, o.timeout),
            (Duration::from_secs(20), Duration::from_secs(30))
        );
    }

    #[test]
    fn the_key_comes_from_the_environment_and_never_shows() {
        std::env::set_var("HARK_TEST_STT_KEY", "dg-from-env-42");
        let c =
            parse("[stt]\nprovider = \"deepgram\"\napi_key = \"${HARK_TEST_STT_KEY}\"\n").unwrap();
        let stt = c.stt.unwrap();
        assert_eq!(stt.api_key.as_ref().unwrap().expose(), "dg-from-env-42");
        let SttSettings::Deepgram(d) = stt.settings().unwrap() else {
            panic!()
        };
        let provider = DeepgramStt::new(d.clone()).unwrap();
        let shown = format!("{stt:?} {d:?} {provider:?}");
        assert!(!shown.contains("dg-from-env-42"), "{shown}");
        assert!(shown.contains("ApiKey(***)"), "{shown}");
    }
}
