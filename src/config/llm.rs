//! `[llm]`: which language model answers, and how to reach it.
//!
//! ```toml
//! [llm]
//! provider = "openai"                 # "openai" (and compatible servers), "anthropic", "gemini"
//! model = "gpt-4o-mini"
//! base_url = "https://api.openai.com/v1"   # e.g. "http://192.168.1.5:11434/v1" for Ollama
//! api_key = "${OPENAI_API_KEY}"       # optional: LAN servers need none
//! ```
//!
//! The keys are the same for every provider; what differs is the default `base_url`, the
//! temperature range (Anthropic's is 0 to 1) and `max_tokens`, which Anthropic requires (1024
//! unless set). [`LlmConfig::build`] turns the section into a provider;
//! [`LlmConfig::validate`] catches mistakes when the file is loaded, naming the key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::fallback::{FallbackLlm, FallbackPolicy};

use crate::providers::http::{ApiKey, RetryPolicy};
use crate::providers::llm::{anthropic, gemini, openai};
use crate::providers::llm::{AnthropicLlm, GeminiLlm, HttpLlmConfig, HttpLlmError, OpenAiLlm};
use crate::providers::Llm;

/// The LLM APIs hark speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LlmProvider {
    /// OpenAI Chat Completions (also Groq, Together, xAI, Cerebras, Ollama, llama.cpp server,
    /// vLLM through `base_url`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API (Claude).
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Google's Gemini API (`streamGenerateContent`).
    #[serde(rename = "gemini")]
    Gemini,
}

impl LlmProvider {
    /// The service's public endpoint, used when `base_url` is not set.
    pub fn default_base_url(self) -> &'static str {
        match self {
            LlmProvider::OpenAi => openai::DEFAULT_BASE_URL,
            LlmProvider::Anthropic => anthropic::DEFAULT_BASE_URL,
            LlmProvider::Gemini => gemini::DEFAULT_BASE_URL,
        }
    }

    /// The highest temperature the service accepts.
    pub fn max_temperature(self) -> f32 {
        match self {
            LlmProvider::Anthropic => 1.0,
            LlmProvider::OpenAi | LlmProvider::Gemini => 2.0,
        }
    }
}

/// `[llm]`: the language model.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Which API to speak.
    pub provider: LlmProvider,
    /// The model name as the service knows it. Required: there is no sensible default across
    /// services.
    pub model: String,
    /// The API root; none: the provider's public endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key (use `${VAR}`); none or empty: no key is sent.
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// Sampling temperature (0 to 2; Anthropic: 0 to 1); none: the service's default.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Longest answer in tokens; none: the service's default (Anthropic, which requires one:
    /// 1024).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Seconds the answer may stall (no byte, keep-alives included) before it is given up.
    #[serde(default = "LlmConfig::default_timeout")]
    pub timeout: f64,
    /// Seconds to wait for the connection.
    #[serde(default = "LlmConfig::default_connect_timeout")]
    pub connect_timeout: f64,
    /// Seconds from sending a request to the first byte of the answer.
    #[serde(default = "LlmConfig::default_first_byte_timeout")]
    pub first_byte_timeout: f64,
    /// Tries per request when the service is rate limited or unavailable (1 = no retry).
    #[serde(default = "LlmConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// Extra headers sent with every request; values are secrets, never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Providers to switch to, in order, when this one fails (see
    /// [`crate::providers::fallback`]): tables with the same keys as this section
    /// (`[[llm.fallback]]`), without fallbacks of their own.
    #[serde(default)]
    pub fallback: Vec<LlmConfig>,
}

// Hand-written so header values can never reach a log line (the key redacts itself).
impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// A rule an `[llm]` section breaks, found after it was read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("llm.{key}: {message}")]
pub struct LlmIssue {
    /// The offending key below `llm`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn issue(key: &str, message: impl Into<String>) -> LlmIssue {
    LlmIssue {
        key: key.into(),
        message: message.into(),
    }
}

/// Why a provider could not be built from a valid-looking section.
#[derive(Debug, thiserror::Error)]
pub enum LlmBuildError {
    /// A rule of the section is broken.
    #[error(transparent)]
    Invalid(#[from] LlmIssue),
    /// The provider refused the settings.
    #[error("llm: {0}")]
    Provider(#[from] HttpLlmError),
}

impl LlmConfig {
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

    /// A section for `provider` and `model` with every other key at its default.
    pub fn new(provider: LlmProvider, model: impl Into<String>) -> Self {
        LlmConfig {
            provider,
            model: model.into(),
            base_url: None,
            api_key: None,
            temperature: None,
            max_tokens: None,
            timeout: Self::default_timeout(),
            connect_timeout: Self::default_connect_timeout(),
            first_byte_timeout: Self::default_first_byte_timeout(),
            max_attempts: Self::default_max_attempts(),
            headers: BTreeMap::new(),
            fallback: Vec::new(),
        }
    }

    /// Checks what serde cannot (ranges, the URL, header names) without building anything, so
    /// loading the file catches mistakes before a session starts.
    pub fn validate(&self) -> Result<(), LlmIssue> {
        self.provider_config()?;
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
    pub fn build(&self) -> Result<Arc<dyn Llm>, LlmBuildError> {
        let config = self.provider_config()?;
        Ok(match self.provider {
            LlmProvider::OpenAi => Arc::new(OpenAiLlm::new(config)?),
            LlmProvider::Anthropic => Arc::new(AnthropicLlm::new(config)?),
            LlmProvider::Gemini => Arc::new(GeminiLlm::new(config)?),
        })
    }

    /// This provider, or, when the section lists fallbacks, a [`FallbackLlm`] over it and them
    /// with `policy`.
    pub fn build_chain(&self, policy: FallbackPolicy) -> Result<Arc<dyn Llm>, LlmBuildError> {
        let primary = self.build()?;
        if self.fallback.is_empty() {
            return Ok(primary);
        }
        let mut chain = vec![primary];
        for f in &self.fallback {
            chain.push(f.build()?);
        }
        Ok(Arc::new(
            FallbackLlm::new(chain, policy).expect("the chain holds the primary"),
        ))
    }

    /// The provider's settings from this section, checked, with the provider's defaults.
    pub fn provider_config(&self) -> Result<HttpLlmConfig, LlmIssue> {
        if self.model.trim().is_empty() {
            return Err(issue("model", "expected a model name, got an empty string"));
        }
        if let Some(t) = self.temperature {
            let max = self.provider.max_temperature();
            if !(0.0..=max).contains(&t) {
                return Err(issue(
                    "temperature",
                    format!("expected a temperature between 0 and {max}, got {t}"),
                ));
            }
        }
        if self.max_tokens == Some(0) {
            return Err(issue("max_tokens", "expected at least 1 token, got 0"));
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
        if !(1..=10).contains(&self.max_attempts) {
            return Err(issue(
                "max_attempts",
                format!("expected 1 to 10 attempts, got {}", self.max_attempts),
            ));
        }
        let base_url = self
            .base_url
            .clone()
            .unwrap_or_else(|| self.provider.default_base_url().to_owned());
        let max_tokens = match self.provider {
            LlmProvider::Anthropic => self.max_tokens.or(Some(anthropic::DEFAULT_MAX_TOKENS)),
            LlmProvider::OpenAi | LlmProvider::Gemini => self.max_tokens,
        };
        let config = HttpLlmConfig {
            base_url,
            model: self.model.clone(),
            api_key: self.api_key.clone(),
            temperature: self.temperature,
            max_tokens,
            headers: self.headers.clone(),
            connect_timeout: seconds("connect_timeout", self.connect_timeout)?,
            first_byte_timeout: seconds("first_byte_timeout", self.first_byte_timeout)?,
            idle_timeout: seconds("timeout", self.timeout)?,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                ..RetryPolicy::default()
            },
        };
        // The URL and headers are checked where they are used, by building the request parts.
        let check = match self.provider {
            LlmProvider::OpenAi => openai::check,
            LlmProvider::Anthropic => anthropic::check,
            LlmProvider::Gemini => gemini::check,
        };
        check(&config).map_err(|e| match e {
            HttpLlmError::InvalidBaseUrl(reason) => {
                issue("base_url", format!("expected an http(s) URL: {reason}"))
            }
            HttpLlmError::InvalidHeader(name) => issue(
                &format!("headers.{name}"),
                "invalid header name or value (the value is not shown)",
            ),
            HttpLlmError::InvalidKey => issue(
                "api_key",
                "the key holds characters that cannot be sent in a header",
            ),
            HttpLlmError::HttpClient(e) => issue("provider", e.to_string()),
        })?;
        Ok(config)
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
    fn a_minimal_section_gets_the_defaults() {
        let c = parse("[llm]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\n").unwrap();
        let llm = c.llm.unwrap();
        let o = llm.provider_config().unwrap();
        assert_eq!(o.base_url, "https://api.openai.com/v1");
        assert_eq!(o.api_key, None);
        assert_eq!(
            (o.connect_timeout, o.first_byte_timeout, o.idle_timeout),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(10)
            )
        );
        assert_eq!(o.retry.max_attempts, 3);
        assert_eq!(llm.build().unwrap().label(), "openai");
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let msg = |t: &str| parse(t).unwrap_err().to_string();
        assert!(msg("[llm]\nprovider = \"claude\"\nmodel = \"m\"\n").starts_with(
            "hark.toml:2: llm.provider: unknown variant `claude`, expected one of `openai`, `anthropic`, `gemini`"
        ));
        assert_eq!(
            msg("[llm]\nprovider = \"openai\"\nmodel = \"m\"\ntemperature = 3.0\n"),
            "hark.toml:4: llm.temperature: expected a temperature between 0 and 2, got 3"
        );
        assert!(
            msg("[llm]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"ftp://x\"\n")
                .starts_with("hark.toml:4: llm.base_url: expected an http(s) URL")
        );
        assert!(
            msg("[llm]\nprovider = \"openai\"\nmodel = \"m\"\ntimeout = 0\n")
                .starts_with("hark.toml:4: llm.timeout: expected a positive number")
        );
        let unknown = msg("[llm]\nprovider = \"openai\"\nmodel = \"m\"\nkey = \"x\"\n");
        assert!(
            unknown.starts_with("hark.toml:4: llm") && unknown.contains("unknown field `key`"),
            "{unknown}"
        );
        assert!(msg("[llm]\nprovider = \"openai\"\n").contains("missing field `model`"));
    }

    #[test]
    fn anthropic_and_gemini_take_the_same_keys_with_their_own_defaults() {
        let section = |provider: &str, extra: &str| {
            parse(&format!(
                "[llm]\nprovider = \"{provider}\"\nmodel = \"m\"\n{extra}"
            ))
            .unwrap()
            .llm
            .unwrap()
        };
        let a = section("anthropic", "");
        let c = a.provider_config().unwrap();
        assert_eq!(
            (c.base_url.as_str(), c.max_tokens),
            ("https://api.anthropic.com", Some(1024))
        );
        assert_eq!(a.build().unwrap().label(), "anthropic");
        let c = section("anthropic", "max_tokens = 200\n")
            .provider_config()
            .unwrap();
        assert_eq!(c.max_tokens, Some(200));

        let g = section("gemini", "temperature = 1.5\n");
        let c = g.provider_config().unwrap();
        assert_eq!(
            (c.base_url.as_str(), c.max_tokens, c.temperature),
            ("https://generativelanguage.googleapis.com", None, Some(1.5))
        );
        assert_eq!(g.build().unwrap().label(), "gemini");
        assert_eq!(
            c.connect_timeout,
            Duration::from_secs(5),
            "the shared defaults"
        );
    }

    #[test]
    fn each_provider_checks_its_own_temperature_range() {
        let msg = |p: &str| {
            parse(&format!(
                "[llm]\nprovider = \"{p}\"\nmodel = \"m\"\ntemperature = 1.5\n"
            ))
            .map(drop)
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            msg("anthropic"),
            Err(
                "hark.toml:4: llm.temperature: expected a temperature between 0 and 1, got 1.5"
                    .into()
            )
        );
        assert_eq!(msg("openai"), Ok(()));
        assert_eq!(msg("gemini"), Ok(()));
    }

    #[test]
    fn the_key_comes_from_the_environment_and_never_shows() {
        std::env::set_var("HARK_TEST_LLM_KEY", "sk-from-env-42");
        let c = parse(
            "[llm]\nprovider = \"openai\"\nmodel = \"m\"\napi_key = \"${HARK_TEST_LLM_KEY}\"\nheaders = { X-Proxy-Token = \"tok-secret\" }\n",
        )
        .unwrap();
        let llm = c.llm.unwrap();
        assert_eq!(llm.api_key.as_ref().unwrap().expose(), "sk-from-env-42");
        let provider = OpenAiLlm::new(llm.provider_config().unwrap()).unwrap();
        let shown = format!("{llm:?} {:?} {provider:?}", llm.provider_config().unwrap());
        assert!(
            !shown.contains("sk-from-env-42") && !shown.contains("tok-secret"),
            "{shown}"
        );
        assert!(
            shown.contains("X-Proxy-Token") && shown.contains("ApiKey(***)"),
            "{shown}"
        );
    }
}
