//! OpenAI Chat Completions with SSE streaming and tool calls, for OpenAI and every server that
//! speaks the same API (Groq, Together, xAI, Cerebras; Ollama, llama.cpp server, vLLM on the
//! LAN): the base URL, the model and the key are configuration, the wire format is one.
//!
//! A request is `POST {base_url}/chat/completions` with `stream: true` and
//! `stream_options.include_usage`; the answer is an event stream of `chat.completion.chunk`
//! objects ending in `data: [DONE]`. Text deltas are passed on as they arrive; tool calls come
//! in fragments (id and name first, then the arguments in pieces, keyed by `index`) and are
//! passed on whole when the choice finishes; the usage chunk (empty `choices`) comes last.
//! Failures before anything streamed (429, 5xx, a refused connection) are retried with
//! backoff; a stream that goes quiet for longer than the idle timeout ends in
//! [`ProviderError::Timeout`]; dropping the [`LlmStream`] closes the connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sse::{SseDecoder, SseEvent};
use crate::agent::context::{ChatContent, ChatContext, ChatItem, ChatMessage, ChatRole};
use crate::agent::schema::openai_chat_tool;
use crate::providers::http::{self, ApiKey, RetryPolicy};
use crate::providers::{Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, ToolCallRequest};

/// OpenAI's own endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Events buffered between the stream task and the session: enough to ride out a slow
/// consumer for a moment, small enough to bound memory per open stream.
const CHANNEL: usize = 64;

/// How to reach a Chat Completions server and what to ask it for.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root, without `/chat/completions` (e.g. `http://192.168.1.5:11434/v1` for
    /// Ollama).
    pub base_url: String,
    /// The model name as the server knows it.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set and not empty; LAN servers need none.
    pub api_key: Option<ApiKey>,
    /// Sampling temperature; none: the server's default.
    pub temperature: Option<f32>,
    /// Longest answer in tokens (sent as `max_tokens`, which every compatible server reads);
    /// none: the server's default.
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

impl OpenAiConfig {
    /// OpenAI's endpoint with `model`, no key, and the default timeouts (connect 5 s, first
    /// byte 10 s, idle 10 s) and retries (3 attempts).
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
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
impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
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

/// Why the provider could not be built from its config. Messages hold no key or header value.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    /// `base_url` does not parse or is not http(s).
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

/// A Chat Completions LLM. Cheap to share: one per configured provider, used by every session.
pub struct OpenAiLlm {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    model: String,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    key: Option<ApiKey>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiLlm")
            .field("url", &self.url.as_str())
            .field("model", &self.model)
            .field("api_key", &self.key)
            .finish_non_exhaustive()
    }
}

impl OpenAiLlm {
    /// Checks the config and builds the provider on a client of the crate's HTTP stack with
    /// this provider's connect timeout.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiLlm, OpenAiError> {
        let (url, headers, key) = request_parts(&config)?;
        let client = http::http_client_builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(OpenAiError::HttpClient)?;
        Ok(OpenAiLlm {
            client,
            url,
            headers,
            model: config.model,
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            key,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
            retry: config.retry,
        })
    }

    /// The JSON body for `request`: model, converted messages, tools (left out when there are
    /// none, as some servers reject an empty list), streaming with usage, and the sampling
    /// options that are set.
    pub fn request_body(&self, request: &LlmRequest) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert(
            "messages".into(),
            Value::Array(chat_messages(&request.context)),
        );
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(openai_chat_tool).collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(t) = self.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(m) = self.max_tokens {
            body.insert("max_tokens".into(), json!(m));
        }
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        Value::Object(body)
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
                provider = self.label(),
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
        Err(http::status_error(
            status,
            &headers,
            &text,
            self.key.as_ref(),
        ))
    }
}

#[async_trait]
impl Llm for OpenAiLlm {
    fn label(&self) -> &str {
        "openai"
    }

    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = serde_json::to_vec(&self.request_body(&request))
            .map_err(|e| ProviderError::Protocol(format!("cannot encode the request: {e}")))?;
        tracing::debug!(
            provider = self.label(),
            model = %self.model,
            items = request.context.len(),
            tools = request.tools.len(),
            "LLM request"
        );
        let (response, first_byte_deadline) = self.open(body).await?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let reader = StreamReader {
            response,
            first_byte_deadline,
            idle_timeout: self.idle_timeout,
            key: self.key.clone(),
            tx,
        };
        tokio::spawn(reader.run());
        Ok(rx)
    }
}

/// Checks the URL, headers and key of `config` without building a client, so a config file
/// can be validated when it is loaded.
pub fn check(config: &OpenAiConfig) -> Result<(), OpenAiError> {
    request_parts(config).map(drop)
}

/// What every request carries: the URL, the headers (the key's as a sensitive value) and the
/// key itself (kept for redacting the service's messages).
fn request_parts(
    config: &OpenAiConfig,
) -> Result<(reqwest::Url, HeaderMap, Option<ApiKey>), OpenAiError> {
    let url = chat_url(&config.base_url)?;
    let key = config.api_key.clone().filter(|k| !k.is_empty());
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let invalid = || OpenAiError::InvalidHeader(name.clone());
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut v = HeaderValue::from_str(value).map_err(|_| invalid())?;
        v.set_sensitive(true);
        headers.insert(n, v);
    }
    if let Some(k) = &key {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose()))
            .map_err(|_| OpenAiError::InvalidKey)?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    Ok((url, headers, key))
}

/// `{base}/chat/completions`, with or without a trailing `/` on the base.
fn chat_url(base: &str) -> Result<reqwest::Url, OpenAiError> {
    let joined = format!("{}/chat/completions", base.trim_end_matches('/'));
    let url =
        reqwest::Url::parse(&joined).map_err(|e| OpenAiError::InvalidBaseUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OpenAiError::InvalidBaseUrl(format!(
            "scheme {:?} is not http(s)",
            url.scheme()
        )));
    }
    Ok(url)
}

/// The chat context as Chat Completions `messages`.
///
/// System and developer messages are sent as `system` (every compatible server knows it;
/// several LAN servers reject `developer`, and OpenAI treats the two alike). A user message
/// with images becomes content parts (`text` and `image_url` with its `detail`); other
/// messages are plain strings, images left out (only user messages may carry them). A run of
/// function calls becomes one assistant message with `tool_calls` (parallel calls, as the model
/// made them), and each output a `tool` message answering its `tool_call_id`.
pub fn chat_messages(context: &ChatContext) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(context.len());
    let mut in_call_run = false;
    for item in context.items() {
        match item {
            ChatItem::Message(m) => {
                in_call_run = false;
                out.push(message(m));
            }
            ChatItem::FunctionCall(c) => {
                let arguments = if c.arguments.trim().is_empty() {
                    "{}"
                } else {
                    c.arguments.as_str()
                };
                let call = json!({
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": arguments},
                });
                let run = out
                    .last_mut()
                    .filter(|_| in_call_run)
                    .and_then(|m| m.get_mut("tool_calls"))
                    .and_then(Value::as_array_mut);
                match run {
                    Some(calls) => calls.push(call),
                    None => out.push(json!({
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [call],
                    })),
                }
                in_call_run = true;
            }
            ChatItem::FunctionCallOutput(o) => {
                in_call_run = false;
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": o.call_id,
                    "content": o.output,
                }));
            }
        }
    }
    out
}

fn message(m: &ChatMessage) -> Value {
    let role = match m.role {
        ChatRole::System | ChatRole::Developer => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    };
    let has_image = m.content.iter().any(|c| matches!(c, ChatContent::Image(_)));
    if m.role != ChatRole::User || !has_image {
        return json!({"role": role, "content": m.text()});
    }
    let parts: Vec<Value> = m
        .content
        .iter()
        .map(|c| match c {
            ChatContent::Text(t) => json!({"type": "text", "text": t}),
            ChatContent::Image(img) => json!({
                "type": "image_url",
                "image_url": {"url": img.to_data_url(), "detail": img.inference_detail},
            }),
        })
        .collect();
    json!({"role": role, "content": parts})
}

/// One `chat.completion.chunk` (or an error object sent in its place), as far as it is read.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// A refusal is what the model says instead of answering: spoken like content.
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// A tool call being assembled from its fragments.
struct PartialCall {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

/// What the chunks of one answer add up to, fed one SSE event at a time.
#[derive(Default)]
pub(crate) struct Assembler {
    calls: Vec<PartialCall>,
    usage: Option<Usage>,
    /// A choice reported its `finish_reason`.
    finished: bool,
    /// `data: [DONE]` arrived.
    done: bool,
}

impl Assembler {
    /// Reads one event's data; appends the events to pass on now to `out`.
    fn feed(
        &mut self,
        data: &str,
        key: Option<&ApiKey>,
        out: &mut Vec<LlmEvent>,
    ) -> Result<(), ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| ProviderError::Protocol(format!("malformed chunk: {e}")))?;
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            return Err(stream_error(&error, key));
        }
        if let Some(usage) = chunk.usage {
            // Some servers repeat running totals on every chunk: the last one is the answer's.
            self.usage = Some(usage);
        }
        // Only one choice is asked for (no `n`); a server sending more is read as one.
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(delta) = choice.delta {
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        out.push(LlmEvent::Text(text));
                    }
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.add_fragment(call);
                }
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
                self.flush_calls(out)?;
            }
        }
        Ok(())
    }

    /// Adds a fragment to its call: the one at its `index`, unless it brings an id different
    /// from that call's (Ollama numbers every parallel call 0, telling them apart by id only).
    fn add_fragment(&mut self, d: ToolCallDelta) {
        let index = d
            .index
            .unwrap_or_else(|| self.calls.last().map_or(0, |c| c.index));
        let id = d.id.filter(|id| !id.is_empty());
        let slot = self.calls.iter().rposition(|c| {
            c.index == index && id.as_ref().is_none_or(|id| c.id.is_empty() || c.id == *id)
        });
        let call = match slot {
            Some(i) => &mut self.calls[i],
            None => {
                self.calls.push(PartialCall {
                    index,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.calls.last_mut().expect("just pushed")
            }
        };
        if let Some(id) = id {
            call.id = id;
        }
        if let Some(f) = d.function {
            match f.name.filter(|n| !n.is_empty()) {
                Some(n) if call.name.is_empty() => call.name = n,
                // Some servers repeat the name with every fragment.
                Some(n) if n != call.name => call.name.push_str(&n),
                _ => {}
            }
            if let Some(a) = f.arguments {
                call.arguments.push_str(&a);
            }
        }
    }

    /// Passes on the assembled calls, in the order the model made them.
    fn flush_calls(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), ProviderError> {
        static ANONYMOUS: AtomicU64 = AtomicU64::new(0);
        for call in self.calls.drain(..) {
            if call.name.is_empty() {
                return Err(ProviderError::Protocol("a tool call without a name".into()));
            }
            let call_id = if call.id.is_empty() {
                // A server that gives no id (some LAN builds) still needs outputs matched.
                format!("call_hark_{}", ANONYMOUS.fetch_add(1, Ordering::Relaxed))
            } else {
                call.id
            };
            let arguments = if call.arguments.trim().is_empty() {
                "{}".to_owned()
            } else {
                call.arguments
            };
            out.push(LlmEvent::ToolCall(ToolCallRequest {
                call_id,
                name: call.name,
                arguments,
            }));
        }
        Ok(())
    }

    /// The stream's body ended (`[DONE]` or end of body): the last events, or the error a
    /// stream that stopped before the answer finished means.
    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), ProviderError> {
        if !self.done && !self.finished {
            return Err(ProviderError::Unavailable(
                "the stream ended before the answer was complete".into(),
            ));
        }
        self.flush_calls(out)?;
        if let Some(u) = self.usage.take() {
            out.push(LlmEvent::Usage {
                input_tokens: u.prompt_tokens,
                output_tokens: u.completion_tokens,
            });
        }
        Ok(())
    }
}

/// An `{"error": {...}}` object sent inside the stream.
fn stream_error(error: &Value, key: Option<&ApiKey>) -> ProviderError {
    let field = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, code) = (field("type"), field("code"));
    if kind.contains("rate_limit") || code.contains("rate_limit") {
        return ProviderError::RateLimited { retry_after: None };
    }
    if kind == "authentication_error" || code == "invalid_api_key" {
        return ProviderError::Auth;
    }
    let message = match error {
        Value::String(s) => s.as_str(),
        _ => field("message"),
    };
    let message = http::shorten(message.trim());
    let message = key.map_or(message.clone(), |k| k.redact(&message));
    ProviderError::Unavailable(format!("error in stream: {message}"))
}

/// Reads one answer's body and sends its events until the end, an error, or the receiver is
/// dropped (which drops the response and so closes the connection).
struct StreamReader {
    response: reqwest::Response,
    first_byte_deadline: Instant,
    idle_timeout: Duration,
    key: Option<ApiKey>,
    tx: mpsc::Sender<Result<LlmEvent, ProviderError>>,
}

impl StreamReader {
    async fn run(mut self) {
        let mut decoder = SseDecoder::new();
        let mut assembler = Assembler::default();
        let mut events: Vec<SseEvent> = Vec::new();
        let mut out: Vec<LlmEvent> = Vec::new();
        let mut deadline = self.first_byte_deadline;
        loop {
            let next = tokio::select! {
                _ = self.tx.closed() => {
                    tracing::debug!("LLM stream dropped by the caller; closing the connection");
                    return;
                }
                next = tokio::time::timeout_at(deadline, self.response.chunk()) => next,
            };
            let bytes = match next {
                Err(_) => return self.fail(ProviderError::Timeout).await,
                Ok(Err(e)) => return self.fail(http::transport_error(e)).await,
                Ok(Ok(None)) => {
                    decoder.finish();
                    let result = assembler.end(&mut out);
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
            let mut result = Ok(());
            for event in events.drain(..) {
                result = assembler.feed(&event.data, self.key.as_ref(), &mut out);
                if result.is_err() || assembler.done {
                    break;
                }
            }
            if result.is_ok() && assembler.done {
                result = assembler.end(&mut out);
            }
            if !self.send_all(&mut out).await {
                return;
            }
            match result {
                Err(e) => return self.fail(e).await,
                Ok(()) if assembler.done => return,
                Ok(()) => {}
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
        tracing::warn!(provider = "openai", error = %error, "LLM stream failed");
        let _ = self.tx.send(Err(error)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::context::{ImageContent, InferenceDetail};

    fn feed_all(chunks: &[&str]) -> Result<Vec<LlmEvent>, ProviderError> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for c in chunks {
            a.feed(c, None, &mut out)?;
        }
        a.end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn calls_sharing_index_zero_are_told_apart_by_id() {
        let out = feed_all(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ])
        .unwrap();
        let names: Vec<_> = out
            .iter()
            .map(|e| match e {
                LlmEvent::ToolCall(c) => (c.call_id.as_str(), c.name.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [("a", "f"), ("b", "g")]);
    }

    #[test]
    fn a_call_without_id_or_arguments_gets_both() {
        let out = feed_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"hang_up"}}]},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ])
        .unwrap();
        let [LlmEvent::ToolCall(c)] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(c.call_id.starts_with("call_hark_"));
        assert_eq!((c.name.as_str(), c.arguments.as_str()), ("hang_up", "{}"));
    }

    #[test]
    fn a_stream_without_finish_or_done_is_incomplete() {
        let e = feed_all(&[r#"{"choices":[{"delta":{"content":"Hel"}}]}"#]).unwrap_err();
        assert!(matches!(e, ProviderError::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn errors_in_the_stream_are_classified_and_redacted() {
        let key = ApiKey::new("sk-k");
        let e = |v: Value| stream_error(&v, Some(&key));
        assert_eq!(
            e(json!({"type": "rate_limit_error", "message": "slow down"})),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(
            e(json!({"code": "invalid_api_key", "message": "bad"})),
            ProviderError::Auth
        );
        assert_eq!(
            e(json!({"type": "server_error", "message": "oops sk-k"})),
            ProviderError::Unavailable("error in stream: oops ***".into())
        );
    }

    #[test]
    fn developer_becomes_system_and_images_only_go_in_user_messages() {
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::Developer, "be terse");
        let img =
            ImageContent::inline(vec![1u8, 2, 3], "image/png").with_detail(InferenceDetail::Low);
        ctx.add_message(
            ChatRole::User,
            vec!["what is this?".into(), img.clone().into()],
        );
        ctx.add_message(ChatRole::Assistant, vec!["a cat".into(), img.into()]);
        assert_eq!(
            chat_messages(&ctx),
            [
                json!({"role": "system", "content": "be terse"}),
                json!({"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AQID", "detail": "low"}},
                ]}),
                json!({"role": "assistant", "content": "a cat"}),
            ]
        );
    }

    #[test]
    fn base_urls_with_or_without_a_slash_reach_chat_completions() {
        for base in ["http://h:8080/v1", "http://h:8080/v1/"] {
            assert_eq!(
                chat_url(base).unwrap().as_str(),
                "http://h:8080/v1/chat/completions"
            );
        }
        assert!(chat_url("ftp://h/v1").is_err());
        assert!(chat_url("not a url").is_err());
    }
}
