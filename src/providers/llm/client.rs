//! What the HTTP LLM providers share: their settings, the request parts (URL, headers, the key
//! as a sensitive header), sending with retries before the first byte, and the task that reads
//! a streamed answer under first-byte and idle timeouts until the end, an error, or the caller
//! drops the stream.
//!
//! Each provider supplies only its wire format: where requests go and how the key is sent
//! ([`Route`]), the request body, and an [`Answer`] that turns the server-sent events of one
//! answer into [`LlmEvent`]s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sse::{SseDecoder, SseEvent};
use crate::providers::http::{self, ApiKey, RetryPolicy};
use crate::providers::{LlmEvent, LlmRequest, LlmStream, ProviderError};

/// Events buffered between the stream task and the session: enough to ride out a slow
/// consumer for a moment, small enough to bound memory per open stream.
const CHANNEL: usize = 64;

/// How to reach an LLM service over HTTP and what to ask it for; the same keys for every
/// provider (the `[llm]` section has one shape), each provider's constructor filling in its own
/// endpoint (e.g. [`super::OpenAiLlm::config`]).
#[derive(Clone)]
pub struct HttpLlmConfig {
    /// The API root, without the provider's path (e.g. `http://192.168.1.5:11434/v1` for
    /// Ollama, `https://api.anthropic.com` for Anthropic).
    pub base_url: String,
    /// The model name as the service knows it.
    pub model: String,
    /// Sent in the provider's key header when set and not empty; LAN servers need none.
    pub api_key: Option<ApiKey>,
    /// Sampling temperature; none: the service's default.
    pub temperature: Option<f32>,
    /// Longest answer in tokens; none: the service's default (Anthropic requires one: its
    /// constructor sets a default).
    pub max_tokens: Option<u32>,
    /// Sent with every request (e.g. `OpenAI-Organization`, a proxy's token); values are
    /// treated as secrets and never logged.
    pub headers: BTreeMap<String, String>,
    /// Longest wait for the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait from sending the request to the first byte of the answer's body.
    pub first_byte_timeout: Duration,
    /// Longest silence between two pieces of the streamed answer (keep-alives count).
    pub idle_timeout: Duration,
    /// Retries of a request that failed before anything streamed.
    pub retry: RetryPolicy,
}

impl HttpLlmConfig {
    /// `model` at `base_url`, no key, and the default timeouts (connect 5 s, first byte 10 s,
    /// idle 10 s) and retries (3 attempts).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        HttpLlmConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            headers: BTreeMap::new(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

// Hand-written so the key and header values (secrets) can never reach a log line.
impl std::fmt::Debug for HttpLlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Why a provider could not be built from its config. Messages hold no key or header value.
#[derive(Debug, thiserror::Error)]
pub enum HttpLlmError {
    /// `base_url` does not parse or is not http(s), or the model cannot go in the URL.
    #[error("invalid base URL: {0}")]
    InvalidBaseUrl(String),
    /// A header name or value cannot be sent (the value is not shown: it may be secret).
    #[error("header {0:?} has an invalid name or value")]
    InvalidHeader(String),
    /// The key holds characters a header cannot carry (the key is not shown).
    #[error("the API key holds characters that cannot be sent in a header")]
    InvalidKey,
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// The header a service reads the key from.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and compatible servers).
    Bearer,
    /// The key alone in a header of this name (`x-api-key`, `x-goog-api-key`).
    Named(&'static str),
}

/// Maps a refused request (status, headers, body) to the error it means, redacting `key`.
pub(super) type StatusErrorFn = fn(StatusCode, &HeaderMap, &str, Option<&ApiKey>) -> ProviderError;

/// Where a provider's requests go and what they always carry.
pub(super) struct Route {
    /// The full URL of the streaming endpoint.
    pub url: reqwest::Url,
    /// A free listing (the models) that checks the service and the key.
    pub ping: reqwest::Url,
    /// How the key is sent.
    pub key_header: KeyHeader,
    /// Headers the protocol requires on every request (e.g. `anthropic-version`).
    pub fixed: &'static [(&'static str, &'static str)],
    /// The provider's reading of error replies ([`http::status_error`] unless it knows better).
    pub status_error: StatusErrorFn,
}

impl Route {
    /// A route with the usual reading of error replies.
    pub fn new(
        url: reqwest::Url,
        ping: reqwest::Url,
        key_header: KeyHeader,
        fixed: &'static [(&'static str, &'static str)],
    ) -> Self {
        Route {
            url,
            ping,
            key_header,
            fixed,
            status_error: http::status_error,
        }
    }
}

/// `{base}{path}` (the base with or without a trailing `/`), checked to be http(s).
pub(super) fn join_url(base: &str, path: &str) -> Result<reqwest::Url, HttpLlmError> {
    let joined = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let url =
        reqwest::Url::parse(&joined).map_err(|e| HttpLlmError::InvalidBaseUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpLlmError::InvalidBaseUrl(format!(
            "scheme {:?} is not http(s)",
            url.scheme()
        )));
    }
    Ok(url)
}

/// What every request carries: the configured headers and the key's (both as sensitive
/// values), the protocol's fixed headers, JSON in and an event stream out; and the key itself
/// (kept for redacting the service's messages).
fn request_headers(
    config: &HttpLlmConfig,
    route: &Route,
) -> Result<(HeaderMap, Option<ApiKey>), HttpLlmError> {
    let key = config.api_key.clone().filter(|k| !k.is_empty());
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let invalid = || HttpLlmError::InvalidHeader(name.clone());
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut v = HeaderValue::from_str(value).map_err(|_| invalid())?;
        v.set_sensitive(true);
        headers.insert(n, v);
    }
    for (name, value) in route.fixed {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    if let Some(k) = &key {
        let (name, value) = match route.key_header {
            KeyHeader::Bearer => (AUTHORIZATION, format!("Bearer {}", k.expose())),
            KeyHeader::Named(name) => (HeaderName::from_static(name), k.expose().to_owned()),
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| HttpLlmError::InvalidKey)?;
        v.set_sensitive(true);
        headers.insert(name, v);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    Ok((headers, key))
}

/// Reads the events of one streamed answer: the provider's wire format.
pub(super) trait Answer: Send + 'static {
    /// Reads one event; appends the events to pass on now to `out`. `Ok(true)`: the answer is
    /// complete (the rest of the body is not read). `key` redacts the service's messages.
    fn feed(
        &mut self,
        event: &SseEvent,
        key: Option<&ApiKey>,
        out: &mut Vec<LlmEvent>,
    ) -> Result<bool, ProviderError>;

    /// The answer is complete or the body ended: the last events, or the error a stream that
    /// stopped before the answer finished means.
    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), ProviderError>;
}

/// One provider's endpoint on its own client: everything needed to send a request and stream
/// its answer. Cheap to share between sessions.
pub(super) struct Endpoint {
    /// The provider's name in logs and metrics.
    pub label: &'static str,
    /// The model name as the service knows it.
    pub model: String,
    /// Sampling temperature; none: the service's default.
    pub temperature: Option<f32>,
    /// Longest answer in tokens; none: the service's default.
    pub max_tokens: Option<u32>,
    client: reqwest::Client,
    url: reqwest::Url,
    ping_url: reqwest::Url,
    headers: HeaderMap,
    key: Option<ApiKey>,
    status_error: StatusErrorFn,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("label", &self.label)
            .field("url", &self.url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Checks the headers and key of `config` for `route` without building a client, so a
    /// config file can be validated when it is loaded.
    pub fn check(config: &HttpLlmConfig, route: &Route) -> Result<(), HttpLlmError> {
        request_headers(config, route).map(drop)
    }

    /// Checks `config` and builds the endpoint on a client of the crate's HTTP stack with the
    /// configured connect timeout.
    pub fn new(
        label: &'static str,
        config: &HttpLlmConfig,
        route: Route,
    ) -> Result<Endpoint, HttpLlmError> {
        let (headers, key) = request_headers(config, &route)?;
        let client = http::http_client_builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(HttpLlmError::HttpClient)?;
        Ok(Endpoint {
            label,
            model: config.model.clone(),
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            client,
            url: route.url,
            ping_url: route.ping,
            headers,
            key,
            status_error: route.status_error,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
            retry: config.retry,
        })
    }

    /// Lists the models: reachable, and the key taken.
    pub async fn ping(&self) -> Result<(), ProviderError> {
        http::ping(
            &self.client,
            self.ping_url.clone(),
            self.headers.clone(),
            self.key.as_ref(),
            self.first_byte_timeout,
        )
        .await
    }

    /// Sends `body` for `request` (retrying what may be retried until the service accepts it)
    /// and streams the answer, read by `answer`, on a task of its own.
    pub async fn stream(
        &self,
        body: &Value,
        request: &LlmRequest,
        answer: impl Answer,
    ) -> Result<LlmStream, ProviderError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Protocol(format!("cannot encode the request: {e}")))?;
        tracing::debug!(
            provider = self.label,
            model = %self.model,
            items = request.context.len(),
            tools = request.tools.len(),
            "LLM request"
        );
        let (response, first_byte_deadline) = self.open(body).await?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let reader = StreamReader {
            label: self.label,
            response,
            first_byte_deadline,
            idle_timeout: self.idle_timeout,
            key: self.key.clone(),
            tx,
        };
        tokio::spawn(reader.run(answer));
        Ok(rx)
    }

    /// Sends the request, retrying what may be retried, until the server accepts it.
    async fn open(&self, body: Vec<u8>) -> Result<(reqwest::Response, Instant), ProviderError> {
        let mut attempt = 1;
        loop {
            let deadline = Instant::now() + self.first_byte_timeout;
            let error = match self.try_open(body.clone(), deadline).await {
                Ok(response) => return Ok((response, deadline)),
                Err(e) => e,
            };
            let Some(delay) = self.retry.next_delay(attempt, &error) else {
                return Err(error);
            };
            tracing::warn!(
                provider = self.label,
                attempt,
                error = %error,
                "LLM request failed; retrying in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn try_open(
        &self,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<reqwest::Response, ProviderError> {
        let send = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send();
        let response = tokio::time::timeout_at(deadline, send)
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(http::transport_error)?;
        let status = response.status();
        if status.is_success() {
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if content_type.starts_with("application/json") {
                return Err(ProviderError::Protocol(
                    "expected an event stream, got a JSON document (does the server stream?)"
                        .into(),
                ));
            }
            return Ok(response);
        }
        let headers = response.headers().clone();
        // The body only explains the error; a server that will not send it is not waited for.
        let text = tokio::time::timeout_at(deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err((self.status_error)(
            status,
            &headers,
            &text,
            self.key.as_ref(),
        ))
    }
}

/// The service's own message from an error object (`{"message": …}`), shortened and redacted:
/// for errors sent inside a stream.
pub(super) fn stream_error_message(error: &Value, key: Option<&ApiKey>) -> String {
    let message = match error {
        Value::String(s) => s.as_str(),
        _ => error.get("message").and_then(Value::as_str).unwrap_or(""),
    };
    let message = http::shorten(message.trim());
    key.map_or(message.clone(), |k| k.redact(&message))
}

/// A fresh call id (`call_hark_<n>`, unique in the process) for a tool call the service gave
/// none, so its output can still be matched to it. Providers recognise the prefix and do not
/// send such ids back as the service's own.
pub(super) fn new_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{GENERATED_CALL_ID}{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The prefix of [`new_call_id`]'s ids.
pub(super) const GENERATED_CALL_ID: &str = "call_hark_";

/// A conversation as alternating turns of content blocks (Anthropic's `content`, Gemini's
/// `parts`): consecutive items of one role are merged into one turn, as both APIs want (a run
/// of parallel calls is one turn, their results the next).
#[derive(Debug, Default)]
pub(super) struct Turns {
    turns: Vec<(&'static str, Vec<Value>)>,
}

impl Turns {
    /// Appends `block` to the last turn if it is `role`'s, else starts a turn.
    pub fn push(&mut self, role: &'static str, block: Value) {
        self.turn(role).push(block);
    }

    /// Like [`Turns::push`], but puts `block` after the turn's leading results and before its
    /// other blocks: a tool's result must come first in its turn (Anthropic).
    pub fn push_result(&mut self, role: &'static str, block: Value, is_result: fn(&Value) -> bool) {
        let turn = self.turn(role);
        let at = turn.iter().take_while(|b| is_result(b)).count();
        turn.insert(at, block);
    }

    /// The blocks of the last turn if it is `role`'s (what a push of `role` would join).
    pub fn current(&self, role: &str) -> &[Value] {
        match self.turns.last() {
            Some((r, blocks)) if *r == role => blocks,
            _ => &[],
        }
    }

    /// The turns as `{"role": …, <content_key>: [...]}` objects.
    pub fn into_json(self, content_key: &str) -> Vec<Value> {
        self.turns
            .into_iter()
            .map(|(role, blocks)| {
                let mut turn = serde_json::Map::new();
                turn.insert("role".into(), Value::String(role.into()));
                turn.insert(content_key.into(), Value::Array(blocks));
                Value::Object(turn)
            })
            .collect()
    }

    fn turn(&mut self, role: &'static str) -> &mut Vec<Value> {
        if self.turns.last().is_none_or(|(r, _)| *r != role) {
            self.turns.push((role, Vec::new()));
        }
        &mut self.turns.last_mut().expect("just ensured").1
    }
}

/// A call's arguments (JSON text as the LLM wrote them) as the JSON object the APIs take back;
/// an empty object for empty text, and, with a warning, for text that is not a JSON object.
pub(super) fn arguments_object(provider: &str, name: &str, arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            tracing::warn!(
                provider,
                tool = name,
                "the arguments of a call in the context are not a JSON object; sent as {{}}"
            );
            Value::Object(serde_json::Map::new())
        }
    }
}

/// Reads one answer's body and sends its events until the end, an error, or the receiver is
/// dropped (which drops the response and so closes the connection).
struct StreamReader {
    label: &'static str,
    response: reqwest::Response,
    first_byte_deadline: Instant,
    idle_timeout: Duration,
    key: Option<ApiKey>,
    tx: mpsc::Sender<Result<LlmEvent, ProviderError>>,
}

impl StreamReader {
    async fn run(mut self, mut answer: impl Answer) {
        let mut decoder = SseDecoder::new();
        let mut events: Vec<SseEvent> = Vec::new();
        let mut out: Vec<LlmEvent> = Vec::new();
        let mut deadline = self.first_byte_deadline;
        loop {
            let next = tokio::select! {
                _ = self.tx.closed() => {
                    tracing::debug!(
                        provider = self.label,
                        "LLM stream dropped by the caller; closing the connection"
                    );
                    return;
                }
                next = tokio::time::timeout_at(deadline, self.response.chunk()) => next,
            };
            let bytes = match next {
                Err(_) => return self.fail(ProviderError::Timeout).await,
                Ok(Err(e)) => return self.fail(http::transport_error(e)).await,
                Ok(Ok(None)) => {
                    decoder.finish();
                    let result = answer.end(&mut out);
                    if self.send_all(&mut out).await {
                        if let Err(e) = result {
                            self.fail(e).await;
                        }
                    }
                    return;
                }
                Ok(Ok(Some(bytes))) => bytes,
            };
            deadline = Instant::now() + self.idle_timeout;
            if let Err(e) = decoder.push(&bytes, &mut events) {
                return self.fail(ProviderError::Protocol(e.to_string())).await;
            }
            let mut result = Ok(false);
            for event in events.drain(..) {
                result = answer.feed(&event, self.key.as_ref(), &mut out);
                if !matches!(result, Ok(false)) {
                    break;
                }
            }
            let result = match result {
                Ok(true) => answer.end(&mut out).map(|()| true),
                other => other,
            };
            if !self.send_all(&mut out).await {
                return;
            }
            match result {
                Err(e) => return self.fail(e).await,
                Ok(true) => return,
                Ok(false) => {}
            }
        }
    }

    /// Sends `out`'s events in order; false when the receiver is gone.
    async fn send_all(&self, out: &mut Vec<LlmEvent>) -> bool {
        for event in out.drain(..) {
            if self.tx.send(Ok(event)).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn fail(&self, error: ProviderError) {
        tracing::warn!(provider = self.label, error = %error, "LLM stream failed");
        let _ = self.tx.send(Err(error)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_with_or_without_a_slash_reach_the_path() {
        for base in ["http://h:8080/v1", "http://h:8080/v1/"] {
            assert_eq!(
                join_url(base, "/chat/completions").unwrap().as_str(),
                "http://h:8080/v1/chat/completions"
            );
        }
        assert!(join_url("ftp://h/v1", "x").is_err());
        assert!(join_url("not a url", "x").is_err());
    }

    #[test]
    fn turns_merge_consecutive_items_of_a_role_and_put_results_first() {
        let mut t = Turns::default();
        let is_result = |b: &Value| b["r"] == true;
        t.push("user", serde_json::json!({"t": 1}));
        t.push("assistant", serde_json::json!({"t": 2}));
        t.push("assistant", serde_json::json!({"t": 3}));
        t.push("user", serde_json::json!({"t": 4}));
        t.push_result("user", serde_json::json!({"r": true, "n": 1}), is_result);
        t.push_result("user", serde_json::json!({"r": true, "n": 2}), is_result);
        assert_eq!(
            t.into_json("content"),
            [
                serde_json::json!({"role": "user", "content": [{"t": 1}]}),
                serde_json::json!({"role": "assistant", "content": [{"t": 2}, {"t": 3}]}),
                serde_json::json!({"role": "user", "content": [
                    {"r": true, "n": 1}, {"r": true, "n": 2}, {"t": 4}]}),
            ]
        );
    }

    #[test]
    fn arguments_become_an_object_whatever_the_llm_wrote() {
        assert_eq!(
            arguments_object("p", "f", r#"{"a":1}"#),
            serde_json::json!({"a": 1})
        );
        for bad in ["", "  ", "[1]", "{\"a\":", "null"] {
            assert_eq!(
                arguments_object("p", "f", bad),
                serde_json::json!({}),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_go_in_the_routes_header_as_sensitive_values() {
        let url = join_url("http://h", "x").unwrap();
        let config = HttpLlmConfig {
            api_key: Some(ApiKey::new("k-1")),
            ..HttpLlmConfig::new("http://h", "m")
        };
        let named = Route::new(
            url.clone(),
            url.clone(),
            KeyHeader::Named("x-api-key"),
            &[("v", "1")],
        );
        let (h, _) = request_headers(&config, &named).unwrap();
        assert_eq!(h["x-api-key"], "k-1");
        assert!(h["x-api-key"].is_sensitive());
        assert!(!h.contains_key(AUTHORIZATION));
        assert_eq!(h["v"], "1");
        assert_eq!(h[ACCEPT], "text/event-stream");
        let (h, _) = request_headers(
            &config,
            &Route::new(url.clone(), url, KeyHeader::Bearer, &[]),
        )
        .unwrap();
        assert_eq!(h[AUTHORIZATION], "Bearer k-1");
    }
}
