//! What every HTTP provider shares: the crate's one HTTP client, API keys that cannot leak,
//! the mapping of HTTP failures to [`ProviderError`], and retries with capped backoff.
//!
//! One client stack (reqwest on rustls with ring; no OpenSSL, no aws-lc) serves webhooks, MCP
//! over HTTP and every provider, on the TLS configuration the WebSocket client uses too
//! ([`super::tls`]), so TLS is set up one way and cross-compiles with a plain gcc.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::ProviderError;

/// How much of a service's own error message is kept in a [`ProviderError`].
const MESSAGE_CHARS: usize = 200;

/// A reqwest client builder with the process's TLS provider (ring) installed; every HTTP
/// client in hark starts here, so TLS is set up one way.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a default provider (to avoid aws-lc's C build); install ring
    // once for anything that asks for the process default. An error only means a provider is
    // already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("hark/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(super::tls::client_config().as_ref().clone())
}

/// The process-wide HTTP client (one connection pool), created on first use. A
/// `reqwest::Client` is a cheap handle: clone it freely.
pub fn shared_http_client() -> Result<reqwest::Client, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let built = http_client_builder().build()?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

/// A secret API key. Its `Debug` prints `ApiKey(***)` and it has no `Display`, so a key held
/// in a config or provider struct cannot reach a log line or an error message by accident;
/// [`ApiKey::expose`] is the one, greppable, way to read it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the one place that puts it in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the key is empty (`api_key = "${KEY}"` with `KEY` set to nothing): treated as no
    /// key, as LAN servers need none.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// `text` with every occurrence of the key replaced by `***`: a service may echo the key
    /// back in an error message, which must not be passed on.
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            text.to_owned()
        } else {
            text.replace(self.0.as_str(), "***")
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// When and how often a request that failed before streaming anything is tried again.
///
/// Only rate limits (429) and unavailability (5xx, a refused connection) are retried: the
/// request never reached a model, so repeating it is safe. The wait doubles from `base_delay`
/// up to `max_delay`, each time scaled by a random factor in [0.5, 1] (jitter, so devices that
/// failed together do not retry together), and is never shorter than the service's
/// `Retry-After`. A `Retry-After` longer than `max_retry_after` is not waited for: the error is
/// returned, so a fallback provider can answer instead of the caller waiting in silence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// The wait before the second try, before jitter.
    pub base_delay: Duration,
    /// The longest wait between tries, before `Retry-After`.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; longer ones end the retries.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Whether `error` is worth another try at all.
    pub fn is_retryable(error: &ProviderError) -> bool {
        matches!(
            error,
            ProviderError::RateLimited { .. } | ProviderError::Unavailable(_)
        )
    }

    /// The wait after failed try number `attempt` (1-based), or `None` when there should be no
    /// further try: attempts used up, the error not retryable, or a `Retry-After` too long.
    pub fn next_delay(&self, attempt: u32, error: &ProviderError) -> Option<Duration> {
        if attempt >= self.max_attempts || !Self::is_retryable(error) {
            return None;
        }
        let doubled = self
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_delay);
        let jittered = doubled.mul_f64(0.5 + 0.5 * unit_random());
        match error {
            ProviderError::RateLimited {
                retry_after: Some(after),
            } => (*after <= self.max_retry_after).then(|| jittered.max(*after)),
            _ => Some(jittered),
        }
    }
}

/// A number in [0, 1) from the OS-seeded std hasher: enough randomness for jitter without a
/// random-number crate.
fn unit_random() -> f64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = std::collections::hash_map::RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The `Retry-After` header in its seconds form (`Retry-After: 2`); the HTTP-date form, which
/// the LLM APIs do not send, reads as absent.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = text.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// The error an HTTP status means, with the service's own message from `body` (redacted with
/// `key`, shortened) where it helps: 401/403 → [`ProviderError::Auth`], 429 →
/// [`ProviderError::RateLimited`] with `Retry-After`, 408 → [`ProviderError::Timeout`], 5xx →
/// [`ProviderError::Unavailable`], any other status → [`ProviderError::Protocol`] (the service
/// refused the request as written: an unknown model, a bad parameter).
pub fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    key: Option<&ApiKey>,
) -> ProviderError {
    let message = || {
        let m = error_message(body).unwrap_or_default();
        let m = match key {
            Some(k) => k.redact(&m),
            None => m,
        };
        if m.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {m}", status.as_u16())
        }
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Auth,
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
            retry_after: retry_after(headers),
        },
        StatusCode::REQUEST_TIMEOUT => ProviderError::Timeout,
        s if s.is_server_error() => ProviderError::Unavailable(message()),
        _ => ProviderError::Protocol(message()),
    }
}

/// Whether a service answers and takes the key: one GET of a free, documented listing
/// (models, voices) with the headers its requests carry, within `timeout`. What the
/// providers' `ping` use.
pub async fn ping(
    client: &reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    key: Option<&ApiKey>,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let response = tokio::time::timeout(timeout, client.get(url).headers(headers).send())
        .await
        .map_err(|_| ProviderError::Timeout)?
        .map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let headers = response.headers().clone();
    let body = tokio::time::timeout(timeout, response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Err(status_error(status, &headers, &body, key))
}

/// The human-readable message of an error body: OpenAI's `{"error": {"message": …}}` (also
/// Anthropic's and Gemini's shape), or the `{"error": "…"}` some LAN servers send; shortened.
/// `None` when the body holds neither (an HTML proxy page is not worth repeating).
pub fn error_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let error = v.get("error")?;
    let text = match error {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("message")?.as_str()?,
        _ => return None,
    };
    Some(shorten(text.trim()))
}

/// `text` cut to [`MESSAGE_CHARS`] characters, marked with `…` when cut.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The error a failed send or body read means. The URL is left out (some APIs carry keys in
/// it); a timeout is [`ProviderError::Timeout`], anything else [`ProviderError::Unavailable`].
pub fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Timeout;
    }
    let what = if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "connection lost"
    } else {
        "request failed"
    };
    // The source chain says why (refused, reset, TLS) without the URL.
    let mut cause = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        ProviderError::Unavailable(what.to_owned())
    } else {
        ProviderError::Unavailable(format!("{what}: {}", shorten(&cause)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn api_key_debug_and_redaction_hide_the_key() {
        let k = ApiKey::new("sk-secret-123");
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
        assert_eq!(
            format!("{:?}", Some(k.clone())),
            "Some(ApiKey(***))",
            "nested Debug too"
        );
        assert_eq!(k.redact("bad key sk-secret-123!"), "bad key ***!");
        assert!(ApiKey::new("  ").is_empty());
    }

    #[test]
    fn statuses_map_to_provider_errors() {
        let mut h = HeaderMap::new();
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-secret","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let key = ApiKey::new("sk-secret");
        assert_eq!(
            status_error(StatusCode::UNAUTHORIZED, &h, body, Some(&key)),
            ProviderError::Auth
        );
        assert_eq!(
            status_error(StatusCode::FORBIDDEN, &h, "", None),
            ProviderError::Auth
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            status_error(StatusCode::TOO_MANY_REQUESTS, &h, "", None),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            status_error(
                StatusCode::BAD_GATEWAY,
                &h,
                "<html>bad gateway</html>",
                None
            ),
            ProviderError::Unavailable("HTTP 502".into())
        );
        let e = status_error(StatusCode::BAD_REQUEST, &h, body, Some(&key));
        assert_eq!(
            e,
            ProviderError::Protocol("HTTP 400: Incorrect API key provided: ***".into())
        );
        assert_eq!(
            status_error(
                StatusCode::NOT_FOUND,
                &h,
                r#"{"error":"model 'x' not found"}"#,
                None
            ),
            ProviderError::Protocol("HTTP 404: model 'x' not found".into())
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_ignores_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(5),
        };
        let down = ProviderError::Unavailable("x".into());
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 400), (9, 400)] {
            let d = p.next_delay(attempt, &down).unwrap();
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert_eq!(p.next_delay(10, &down), None, "attempts used up");
        assert_eq!(p.next_delay(1, &ProviderError::Auth), None);
        assert_eq!(p.next_delay(1, &ProviderError::Timeout), None);
        let limited = |s| ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(p.next_delay(1, &limited(2)), Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(1, &limited(6)), None, "too long to wait");
    }

    #[test]
    fn long_messages_are_shortened() {
        let long = "é".repeat(300);
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        let m = error_message(&body).unwrap();
        assert_eq!(m.chars().count(), MESSAGE_CHARS + 1);
        assert!(m.ends_with('…'));
        assert_eq!(error_message("not json"), None);
    }
}
