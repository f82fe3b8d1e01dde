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

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{
    join_url, new_call_id, stream_error_message, Answer, Endpoint, HttpLlmConfig, HttpLlmError,
    KeyHeader, Route,
};
use super::sse::SseEvent;
use crate::agent::context::{ChatContent, ChatContext, ChatItem, ChatMessage, ChatRole};
use crate::agent::schema::openai_chat_tool;
use crate::providers::http::ApiKey;
use crate::providers::{Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, ToolCallRequest};

/// OpenAI's own endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A Chat Completions LLM. Cheap to share: one per configured provider, used by every session.
#[derive(Debug)]
pub struct OpenAiLlm {
    endpoint: Endpoint,
}

impl OpenAiLlm {
    /// OpenAI's endpoint with `model` and the default timeouts and retries; set `base_url` for
    /// another server speaking the API.
    pub fn config(model: impl Into<String>) -> HttpLlmConfig {
        HttpLlmConfig::new(DEFAULT_BASE_URL, model)
    }

    /// Checks the config and builds the provider on a client of its own.
    pub fn new(config: HttpLlmConfig) -> Result<OpenAiLlm, HttpLlmError> {
        let endpoint = Endpoint::new("openai", &config, route(&config)?)?;
        Ok(OpenAiLlm { endpoint })
    }

    /// The JSON body for `request`: model, converted messages, tools (left out when there are
    /// none, as some servers reject an empty list), streaming with usage, and the sampling
    /// options that are set.
    pub fn request_body(&self, request: &LlmRequest) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.endpoint.model));
        body.insert(
            "messages".into(),
            Value::Array(chat_messages(&request.context)),
        );
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(openai_chat_tool).collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(t) = self.endpoint.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(m) = self.endpoint.max_tokens {
            body.insert("max_tokens".into(), json!(m));
        }
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        Value::Object(body)
    }
}

#[async_trait]
impl Llm for OpenAiLlm {
    fn label(&self) -> &str {
        self.endpoint.label
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        self.endpoint.ping().await
    }

    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = self.request_body(&request);
        self.endpoint
            .stream(&body, &request, Assembler::default())
            .await
    }
}

/// Checks the URL, headers and key of `config` without building a client, so a config file
/// can be validated when it is loaded.
pub fn check(config: &HttpLlmConfig) -> Result<(), HttpLlmError> {
    Endpoint::check(config, &route(config)?)
}

/// `POST {base}/chat/completions` with the key as a bearer token; pinged with
/// `GET {base}/models`, which OpenAI and the LAN servers (Ollama, llama.cpp, vLLM) all serve.
fn route(config: &HttpLlmConfig) -> Result<Route, HttpLlmError> {
    let url = join_url(&config.base_url, "chat/completions")?;
    let ping = join_url(&config.base_url, "models")?;
    Ok(Route::new(url, ping, KeyHeader::Bearer, &[]))
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
struct Assembler {
    calls: Vec<PartialCall>,
    usage: Option<Usage>,
    /// A choice reported its `finish_reason`.
    finished: bool,
    /// `data: [DONE]` arrived.
    done: bool,
}

impl Answer for Assembler {
    fn feed(
        &mut self,
        event: &SseEvent,
        key: Option<&ApiKey>,
        out: &mut Vec<LlmEvent>,
    ) -> Result<bool, ProviderError> {
        self.feed_data(&event.data, key, out)?;
        Ok(self.done)
    }

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

impl Assembler {
    /// Reads one event's data; appends the events to pass on now to `out`.
    fn feed_data(
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
        for call in self.calls.drain(..) {
            if call.name.is_empty() {
                return Err(ProviderError::Protocol("a tool call without a name".into()));
            }
            let call_id = if call.id.is_empty() {
                // A server that gives no id (some LAN builds) still needs outputs matched.
                new_call_id()
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
    let message = stream_error_message(error, key);
    ProviderError::Unavailable(format!("error in stream: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::context::{ImageContent, InferenceDetail};

    fn feed_all(chunks: &[&str]) -> Result<Vec<LlmEvent>, ProviderError> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for c in chunks {
            a.feed_data(c, None, &mut out)?;
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
    fn requests_go_to_chat_completions_under_the_base_url() {
        let config = OpenAiLlm::config("m");
        assert_eq!(
            route(&config).unwrap().url.as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
    }
}
