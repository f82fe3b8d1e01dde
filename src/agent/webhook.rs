//! Webhook tools: a function the LLM may call that is an HTTP endpoint, declared in config.
//!
//! Most integrations an installer wants (book a table, open a ticket, look up an order) are
//! already an HTTP endpoint; declaring one in `hark.toml` makes it a tool without writing
//! Rust. The LLM's arguments are sent as the JSON body; a JSON reply comes back to the LLM as
//! JSON, anything else as text.
//!
//! ```toml
//! [[agent.webhooks]]
//! name = "book_table"
//! description = "Book a table at the restaurant."
//! url = "https://example.com/hooks/book"
//! parameters = { type = "object", properties = { people = { type = "integer" }, time = { type = "string" } }, required = ["people", "time"] }
//! headers = { Authorization = "Bearer …" }   # optional; values are secret: never logged
//! timeout_s = 10.0                           # optional, default 10
//! method = "POST"                            # optional: POST (default), PUT or PATCH
//! ```
//!
//! The crate's one HTTP client (one connection pool, one TLS set-up) lives in
//! [`crate::providers::http`]; [`shared_http_client`] and [`http_client_builder`] are here too
//! for the agent code that uses them.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::Value;

use super::tool::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};

/// How much of an error reply's body is shown to the LLM.
const ERROR_BODY_CHARS: usize = 200;

/// The HTTP method a webhook is called with; the arguments are always the JSON body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    /// `POST` (the default).
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

/// A webhook tool as declared in config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The tool's name for the LLM.
    pub name: String,
    /// What it does, for the LLM.
    #[serde(default)]
    pub description: String,
    /// The endpoint (http or https). May itself be secret (e.g. a signed path), so it is kept
    /// out of errors.
    pub url: String,
    /// JSON schema of the arguments (an object schema), written inline in TOML.
    pub parameters: Value,
    /// Sent with every call (typically `Authorization`); values are secrets, never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait for the whole call, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// The HTTP method.
    #[serde(default)]
    pub method: WebhookMethod,
}

fn default_timeout_s() -> f64 {
    10.0
}

// Hand-written so header values (secrets) and the URL can never reach a log line.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_s", &self.timeout_s)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Why a webhook tool could not be built from its config, or the HTTP client not created.
/// Messages never hold header values or the URL's path and query.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse or is not http(s).
    #[error("webhook {name:?}: invalid URL: {reason}")]
    InvalidUrl {
        /// The tool's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `parameters` is not a JSON schema object.
    #[error("webhook {name:?}: parameters must be a JSON schema object (e.g. {{ type = \"object\", properties = {{ … }} }})")]
    InvalidParameters {
        /// The tool's name.
        name: String,
    },
    /// `timeout_s` is not a positive, finite number of seconds.
    #[error("webhook {name:?}: timeout_s must be a positive number of seconds, got {value}")]
    InvalidTimeout {
        /// The tool's name.
        name: String,
        /// The value given.
        value: f64,
    },
    /// A header name or value cannot be sent (the value is not shown: it is secret).
    #[error("webhook {name:?}: header {header:?} has an invalid name or value")]
    InvalidHeader {
        /// The tool's name.
        name: String,
        /// The header's name.
        header: String,
    },
    /// The shared HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

pub use crate::providers::http::http_client_builder;

/// The process-wide HTTP client ([`crate::providers::http::shared_http_client`]), with its
/// error as a [`WebhookError`] for the webhook and agent code that builds on it.
pub fn shared_http_client() -> Result<reqwest::Client, WebhookError> {
    crate::providers::http::shared_http_client().map_err(WebhookError::HttpClient)
}

/// An HTTP endpoint the LLM may call.
pub struct WebhookTool {
    spec: ToolSpec,
    url: reqwest::Url,
    method: reqwest::Method,
    headers: HeaderMap,
    timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTool")
            .field("name", &self.spec.name)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A webhook config, checked and turned into what a request needs.
struct Prepared {
    url: reqwest::Url,
    method: reqwest::Method,
    headers: HeaderMap,
    timeout: Duration,
}

impl WebhookConfig {
    /// Checks the URL, the parameters schema, the timeout and the headers without building an
    /// HTTP client, so `hark check` and config loading catch mistakes before a session starts.
    pub fn validate(&self) -> Result<(), WebhookError> {
        self.prepare().map(drop)
    }

    fn prepare(&self) -> Result<Prepared, WebhookError> {
        let name = self.name.clone();
        let url = reqwest::Url::parse(&self.url).map_err(|e| WebhookError::InvalidUrl {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl {
                name,
                reason: format!("scheme {:?} is not http(s)", url.scheme()),
            });
        }
        if !self.parameters.is_object() {
            return Err(WebhookError::InvalidParameters { name });
        }
        let timeout = Duration::try_from_secs_f64(self.timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or(WebhookError::InvalidTimeout {
                name: name.clone(),
                value: self.timeout_s,
            })?;
        let mut headers = HeaderMap::new();
        for (header, value) in &self.headers {
            let invalid = || WebhookError::InvalidHeader {
                name: name.clone(),
                header: header.clone(),
            };
            let n = HeaderName::from_bytes(header.as_bytes()).map_err(|_| invalid())?;
            let mut v = HeaderValue::from_str(value).map_err(|_| invalid())?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let method = match self.method {
            WebhookMethod::Post => reqwest::Method::POST,
            WebhookMethod::Put => reqwest::Method::PUT,
            WebhookMethod::Patch => reqwest::Method::PATCH,
        };
        Ok(Prepared {
            url,
            method,
            headers,
            timeout,
        })
    }
}

impl WebhookTool {
    /// Checks the config and builds the tool on `client` (normally [`shared_http_client`]), so
    /// config mistakes surface at start-up rather than when the LLM first calls it.
    pub fn new(
        config: &WebhookConfig,
        client: reqwest::Client,
    ) -> Result<WebhookTool, WebhookError> {
        let Prepared {
            url,
            method,
            headers,
            timeout,
        } = config.prepare()?;
        Ok(WebhookTool {
            spec: ToolSpec {
                name: config.name.clone(),
                description: config.description.clone(),
                parameters: config.parameters.clone(),
            },
            url,
            method,
            headers,
            timeout,
            client,
        })
    }
}

/// An error and its causes, joined: reqwest's own message ("error sending request") says
/// little without them ("tcp connect error: Connection refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[async_trait]
impl Tool for WebhookTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args = match args {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => args,
            other => {
                return Err(ToolError::InvalidArguments(format!(
                    "expected a JSON object, got {other}"
                )))
            }
        };
        let body = serde_json::to_vec(&args)
            .map_err(|e| ToolError::InvalidArguments(format!("arguments: {e}")))?;
        let name = &self.spec.name;
        // Errors drop the URL: webhook URLs often carry a secret in their path or query.
        let failed = |e: reqwest::Error| -> ToolError {
            if e.is_timeout() {
                ToolError::Timeout(self.timeout)
            } else {
                ToolError::Failed(format!(
                    "webhook {name:?} failed: {}",
                    chain(&e.without_url())
                ))
            }
        };
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        let bytes = response.bytes().await.map_err(failed)?;
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            let excerpt: String = text.chars().take(ERROR_BODY_CHARS).collect();
            tracing::warn!(tool = %name, status = status.as_u16(), "webhook returned an error");
            return Err(ToolError::Failed(format!(
                "HTTP {}: {excerpt}",
                status.as_u16()
            )));
        }
        if is_json {
            serde_json::from_slice(&bytes)
                .map(ToolOutput::Json)
                .map_err(|e| ToolError::Failed(format!("webhook {name:?} sent invalid JSON: {e}")))
        } else {
            Ok(ToolOutput::Text(text.into_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> WebhookConfig {
        toml::from_str(toml_text).unwrap()
    }

    const BASE: &str = r#"
        name = "book"
        url = "https://example.com/hook/SECRET-PATH?sig=SECRET"
        parameters = { type = "object", properties = { n = { type = "integer" } } }
        headers = { Authorization = "Bearer SECRET" }
    "#;

    #[test]
    fn toml_shape_defaults_and_redacted_debug() {
        let c = config(BASE);
        assert_eq!((c.timeout_s, c.method), (10.0, WebhookMethod::Post));
        assert_eq!(c.parameters["properties"]["n"]["type"], "integer");
        let t = WebhookTool::new(&c, shared_http_client().unwrap()).unwrap();
        assert_eq!(t.spec().parameters, c.parameters);
        let debug = format!("{c:?} {t:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
    }

    #[test]
    fn bad_configs_are_refused_with_typed_errors() {
        assert!(toml::from_str::<WebhookConfig>(&format!("{BASE}\nretries = 3")).is_err());
        assert!(toml::from_str::<WebhookConfig>(&format!("{BASE}\nmethod = \"GET\"")).is_err());
        let mut c = config(BASE);
        c.parameters = Value::String("n: int".into());
        assert!(matches!(
            WebhookTool::new(&c, shared_http_client().unwrap()),
            Err(WebhookError::InvalidParameters { .. })
        ));
        let mut c = config(BASE);
        c.timeout_s = 0.0;
        assert!(matches!(
            WebhookTool::new(&c, shared_http_client().unwrap()),
            Err(WebhookError::InvalidTimeout { .. })
        ));
        let mut c = config(BASE);
        c.headers.insert("X-Bad".into(), "a\nSECRET".into());
        let e = WebhookTool::new(&c, shared_http_client().unwrap()).unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let mut c = config(BASE);
        c.url = "file:///etc/passwd".into();
        assert!(matches!(
            WebhookTool::new(&c, shared_http_client().unwrap()),
            Err(WebhookError::InvalidUrl { .. })
        ));
    }
}
