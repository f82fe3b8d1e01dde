//! `[llm]`: which language model answers, and how to reach it.
//!
//! ```toml
//! [llm]
//! provider = "openai"                 # OpenAI's Chat Completions API, or any server speaking it
//! model = "gpt-4o-mini"
//! base_url = "https://api.openai.com/v1"   # e.g. "http://192.168.1.5:11434/v1" for Ollama
//! api_key = "${OPENAI_API_KEY}"       # optional: LAN servers need none
//! ```
//!
//! [`LlmConfig::build`] turns the section into a provider; [`LlmConfig::validate`] catches
//! mistakes when the file is loaded, naming the key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::http::{ApiKey, RetryPolicy};
use crate::providers::llm::openai::{self, OpenAiConfig, OpenAiError, OpenAiLlm};
use crate::providers::Llm;

/// The LLM APIs hark speaks. One for now; an enum so more can be added without changing the
/// key's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LlmProvider {
    /// OpenAI Chat Completions (also Groq, Together, xAI, Cerebras, Ollama, llama.cpp server,
    /// vLLM through `base_url`).
    #[serde(rename = "openai")]
    OpenAi,
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
    /// Sampling temperature (0 to 2); none: the service's default.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Longest answer in tokens; none: the service's default.
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
    /// The OpenAI provider refused the settings.
    #[error("llm: {0}")]
    OpenAi(#[from] OpenAiError),
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
        }
    }

    /// Checks what serde cannot (ranges, the URL, header names) without building anything, so
    /// loading the file catches mistakes before a session starts.
    pub fn validate(&self) -> Result<(), LlmIssue> {
        self.openai_config().map(drop)
    }

    /// The provider this section describes.
    pub fn build(&self) -> Result<Arc<dyn Llm>, LlmBuildError> {
        match self.provider {
            LlmProvider::OpenAi => Ok(Arc::new(OpenAiLlm::new(self.openai_config()?)?)),
        }
    }

    /// The OpenAI provider's settings from this section.
    pub fn openai_config(&self) -> Result<OpenAiConfig, LlmIssue> {
        if self.model.trim().is_empty() {
            return Err(issue("model", "expected a model name, got an empty string"));
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(issue(
                    "temperature",
                    format!("expected a temperature between 0 and 2, got {t}"),
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
            .unwrap_or_else(|| openai::DEFAULT_BASE_URL.to_owned());
        let config = OpenAiConfig {
            base_url,
            model: self.model.clone(),
            api_key: self.api_key.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
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
        openai::check(&config).map_err(|e| match e {
            OpenAiError::InvalidBaseUrl(reason) => {
                issue("base_url", format!("expected an http(s) URL: {reason}"))
            }
            OpenAiError::InvalidHeader(name) => issue(
                &format!("headers.{name}"),
                "invalid header name or value (the value is not shown)",
            ),
            OpenAiError::InvalidKey => issue(
                "api_key",
                "the key holds characters that cannot be sent in a header",
            ),
            OpenAiError::HttpClient(e) => issue("provider", e.to_string()),
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
        let o = llm.openai_config().unwrap();
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
        assert!(msg("[llm]\nprovider = \"anthropic\"\nmodel = \"m\"\n")
            .starts_with("hark.toml:2: llm.provider: unknown variant `anthropic`"));
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
    fn the_key_comes_from_the_environment_and_never_shows() {
        std::env::set_var("HARK_TEST_LLM_KEY", "sk-from-env-42");
        let c = parse(
            "[llm]\nprovider = \"openai\"\nmodel = \"m\"\napi_key = \"${HARK_TEST_LLM_KEY}\"\nheaders = { X-Proxy-Token = \"tok-secret\" }\n",
        )
        .unwrap();
        let llm = c.llm.unwrap();
        assert_eq!(llm.api_key.as_ref().unwrap().expose(), "sk-from-env-42");
        let provider = OpenAiLlm::new(llm.openai_config().unwrap()).unwrap();
        let shown = format!("{llm:?} {:?} {provider:?}", llm.openai_config().unwrap());
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
