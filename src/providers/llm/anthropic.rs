//! Anthropic's Messages API with streaming and tool use.
//!
//! A request is `POST {base_url}/v1/messages` with the key in `x-api-key`, the API version in
//! `anthropic-version`, and `stream: true`. The instructions go in the top-level `system`; the
//! conversation is alternating `user` and `assistant` turns of content blocks (`text`, `image`,
//! the assistant's `tool_use` calls and the user's `tool_result`s). The answer is an event
//! stream: `message_start` (input token usage), then per content block `content_block_start`,
//! `content_block_delta`s (`text_delta`, or `input_json_delta` pieces of a call's arguments)
//! and `content_block_stop`, then `message_delta` (stop reason, output tokens) and
//! `message_stop`; `ping`s keep it alive and an `error` event can end it. Text is passed on as
//! it arrives, a tool call when its block stops, the usage at the end.

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{
    arguments_object, join_url, stream_error_message, Answer, Endpoint, HttpLlmConfig,
    HttpLlmError, KeyHeader, Route, Turns,
};
use super::sse::SseEvent;
use crate::agent::context::{ChatContent, ChatContext, ChatItem, ChatRole, ImageSource};
use crate::agent::schema::anthropic_tool;
use crate::providers::http::ApiKey;
use crate::providers::{Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, ToolCallRequest};

/// Anthropic's endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The API version sent in `anthropic-version` (the one the Messages API is documented at).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when none is configured: the API requires one, and a spoken answer is short.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// A Messages API LLM. Cheap to share: one per configured provider, used by every session.
#[derive(Debug)]
pub struct AnthropicLlm {
    endpoint: Endpoint,
}

impl AnthropicLlm {
    /// Anthropic's endpoint with `model`, `max_tokens` at [`DEFAULT_MAX_TOKENS`], and the
    /// default timeouts and retries.
    pub fn config(model: impl Into<String>) -> HttpLlmConfig {
        HttpLlmConfig {
            max_tokens: Some(DEFAULT_MAX_TOKENS),
            ..HttpLlmConfig::new(DEFAULT_BASE_URL, model)
        }
    }

    /// Checks the config and builds the provider on a client of its own.
    pub fn new(config: HttpLlmConfig) -> Result<AnthropicLlm, HttpLlmError> {
        let endpoint = Endpoint::new("anthropic", &config, route(&config)?)?;
        Ok(AnthropicLlm { endpoint })
    }

    /// The JSON body for `request`: model, `max_tokens` (required), the instructions as
    /// `system` (left out when there are none), the turns, the tools (left out when there are
    /// none), the temperature when set, and streaming.
    pub fn request_body(&self, request: &LlmRequest) -> Value {
        let (system, messages) = messages(&request.context);
        let mut body = Map::new();
        body.insert("model".into(), json!(self.endpoint.model));
        let max_tokens = self.endpoint.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        body.insert("max_tokens".into(), json!(max_tokens));
        if let Some(system) = system {
            body.insert("system".into(), json!(system));
        }
        body.insert("messages".into(), Value::Array(messages));
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(anthropic_tool).collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(t) = self.endpoint.temperature {
            body.insert("temperature".into(), json!(t));
        }
        body.insert("stream".into(), json!(true));
        Value::Object(body)
    }
}

#[async_trait]
impl Llm for AnthropicLlm {
    fn label(&self) -> &str {
        self.endpoint.label
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        self.endpoint.ping().await
    }

    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = self.request_body(&request);
        self.endpoint
            .stream(&body, &request, MessageStream::default())
            .await
    }
}

/// Checks the URL, headers and key of `config` without building a client, so a config file
/// can be validated when it is loaded.
pub fn check(config: &HttpLlmConfig) -> Result<(), HttpLlmError> {
    Endpoint::check(config, &route(config)?)
}

/// `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`; pinged with
/// `GET {base}/v1/models`.
fn route(config: &HttpLlmConfig) -> Result<Route, HttpLlmError> {
    let url = join_url(&config.base_url, "v1/messages")?;
    Ok(Route::new(
        url,
        join_url(&config.base_url, "v1/models")?,
        KeyHeader::Named("x-api-key"),
        &[("anthropic-version", API_VERSION)],
    ))
}

/// The chat context as the Messages API's `system` and `messages`.
///
/// System and developer messages are joined (blank-line separated) into `system`. Every other
/// item becomes content blocks of a `user` or `assistant` turn, consecutive items of one role
/// merged into one turn: text (empty text left out, as the API refuses it), images of user
/// messages (`base64` or `url` sources; the API takes images only from the user), function
/// calls as the assistant's `tool_use` blocks (arguments as a JSON object) and their outputs as
/// the user's `tool_result` blocks, placed before any text of that turn as the API requires,
/// with `is_error` for a failed tool.
pub fn messages(context: &ChatContext) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<String> = Vec::new();
    let mut turns = Turns::default();
    for item in context.items() {
        match item {
            ChatItem::Message(m) if m.role.is_instructions() => {
                let text = m.text();
                if !text.trim().is_empty() {
                    system.push(text);
                }
            }
            ChatItem::Message(m) => {
                let role = if m.role == ChatRole::User {
                    "user"
                } else {
                    "assistant"
                };
                for content in &m.content {
                    match content {
                        ChatContent::Text(t) if !t.trim().is_empty() => {
                            turns.push(role, json!({"type": "text", "text": t}));
                        }
                        ChatContent::Image(img) if role == "user" => {
                            turns.push(role, image_block(img.source()));
                        }
                        _ => {}
                    }
                }
            }
            ChatItem::FunctionCall(c) => turns.push(
                "assistant",
                json!({
                    "type": "tool_use",
                    "id": c.call_id,
                    "name": c.name,
                    "input": arguments_object("anthropic", &c.name, &c.arguments),
                }),
            ),
            ChatItem::FunctionCallOutput(o) => {
                let mut block = json!({
                    "type": "tool_result",
                    "tool_use_id": o.call_id,
                    "content": o.output,
                });
                if o.is_error {
                    block["is_error"] = json!(true);
                }
                turns.push_result("user", block, |b| b["type"] == "tool_result");
            }
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, turns.into_json("content"))
}

fn image_block(source: &ImageSource) -> Value {
    let source = match source {
        ImageSource::Url(url) => json!({"type": "url", "url": url}),
        ImageSource::Inline { data, mime_type } => json!({
            "type": "base64",
            "media_type": mime_type,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        }),
    };
    json!({"type": "image", "source": source})
}

/// One event of the stream, as far as it is read; types not known here (new ones may be
/// added, as the API says) are skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<Usage>,
    },
    MessageStop,
    Ping,
    Error {
        error: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    cache_creation_input_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking and server-side tool blocks: not spoken, not ours to run.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// A `tool_use` block being assembled.
struct PartialCall {
    index: usize,
    id: String,
    name: String,
    /// `input_json_delta` pieces joined.
    json: String,
    /// The `input` of the block's start, used when no pieces follow.
    input: Value,
}

/// What the events of one answer add up to.
#[derive(Default)]
struct MessageStream {
    calls: Vec<PartialCall>,
    /// `message_start` arrived with the input token counts.
    usage: Option<Usage>,
    stopped: bool,
}

impl Answer for MessageStream {
    fn feed(
        &mut self,
        event: &SseEvent,
        key: Option<&ApiKey>,
        out: &mut Vec<LlmEvent>,
    ) -> Result<bool, ProviderError> {
        let event: StreamEvent = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::Protocol(format!("malformed event: {e}")))?;
        match event {
            StreamEvent::MessageStart { message } => {
                self.usage = Some(message.usage.unwrap_or_default());
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } if !text.is_empty() => out.push(LlmEvent::Text(text)),
                Block::ToolUse { id, name, input } => self.calls.push(PartialCall {
                    index,
                    id,
                    name,
                    json: String::new(),
                    input,
                }),
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.push(LlmEvent::Text(text))
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    match self.calls.iter_mut().find(|c| c.index == index) {
                        Some(call) => call.json.push_str(&partial_json),
                        None => {
                            return Err(ProviderError::Protocol(format!(
                                "arguments for content block {index}, which is not a tool call"
                            )))
                        }
                    }
                }
                _ => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if let Some(at) = self.calls.iter().position(|c| c.index == index) {
                    let call = self.calls.remove(at);
                    out.push(tool_call(call));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let (Some(u), Some(total)) = (usage, self.usage.as_mut()) {
                    // Cumulative: the last one counts.
                    total.output_tokens = u.output_tokens;
                }
                if delta.stop_reason.as_deref() == Some("refusal") {
                    return Err(ProviderError::Protocol(
                        "the model declined to answer (stop_reason refusal)".into(),
                    ));
                }
            }
            StreamEvent::MessageStop => {
                self.stopped = true;
                return Ok(true);
            }
            StreamEvent::Error { error } => return Err(stream_error(&error, key)),
            StreamEvent::Ping | StreamEvent::Other => {}
        }
        Ok(false)
    }

    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), ProviderError> {
        if !self.stopped {
            return Err(ProviderError::Unavailable(
                "the stream ended before the answer was complete".into(),
            ));
        }
        // A block the server never stopped is still a call the model made.
        out.extend(self.calls.drain(..).map(tool_call));
        if let Some(u) = self.usage.take() {
            out.push(LlmEvent::Usage {
                // Cached prompt tokens are prompt tokens too (the API counts them apart).
                input_tokens: u.input_tokens
                    + u.cache_creation_input_tokens
                    + u.cache_read_input_tokens,
                output_tokens: u.output_tokens,
            });
        }
        Ok(())
    }
}

fn tool_call(call: PartialCall) -> LlmEvent {
    let arguments = if !call.json.trim().is_empty() {
        call.json
    } else if call.input.as_object().is_some_and(|o| !o.is_empty()) {
        call.input.to_string()
    } else {
        "{}".to_owned()
    };
    LlmEvent::ToolCall(ToolCallRequest {
        call_id: call.id,
        name: call.name,
        arguments,
    })
}

/// An `error` event's `{"type": …, "message": …}`: overloaded and API errors are the service
/// being unavailable, rate limits and refused keys what they are, anything else a request the
/// service would not serve.
fn stream_error(error: &Value, key: Option<&ApiKey>) -> ProviderError {
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("");
    let message = format!("error in stream: {}", stream_error_message(error, key));
    match kind {
        "overloaded_error" | "api_error" => ProviderError::Unavailable(message),
        "rate_limit_error" => ProviderError::RateLimited { retry_after: None },
        "authentication_error" | "permission_error" => ProviderError::Auth,
        "timeout_error" => ProviderError::Timeout,
        _ => ProviderError::Protocol(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::context::ImageContent;

    fn feed_all(events: &[Value]) -> Result<Vec<LlmEvent>, ProviderError> {
        let mut m = MessageStream::default();
        let mut out = Vec::new();
        for e in events {
            let event = SseEvent {
                event: e["type"].as_str().unwrap_or("").into(),
                data: e.to_string(),
            };
            if m.feed(&event, None, &mut out)? {
                break;
            }
        }
        m.end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_tool_use_without_input_pieces_takes_its_start_input_or_an_empty_object() {
        let out = feed_all(&[
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 5,
                   "cache_read_input_tokens": 2, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block":
                   {"type": "tool_use", "id": "toolu_a", "name": "hang_up", "input": {}}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block":
                   {"type": "tool_use", "id": "toolu_b", "name": "f", "input": {"x": 1}}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                   "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ])
        .unwrap();
        let call = |id: &str, name: &str, args: &str| {
            LlmEvent::ToolCall(ToolCallRequest {
                call_id: id.into(),
                name: name.into(),
                arguments: args.into(),
            })
        };
        assert_eq!(
            out,
            [
                call("toolu_a", "hang_up", "{}"),
                call("toolu_b", "f", r#"{"x":1}"#),
                LlmEvent::Usage {
                    input_tokens: 7,
                    output_tokens: 9
                },
            ]
        );
    }

    #[test]
    fn thinking_blocks_and_unknown_events_are_skipped() {
        let out = feed_all(&[
            json!({"type": "message_start", "message": {}}),
            json!({"type": "content_block_start", "index": 0, "content_block":
                   {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta":
                   {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta":
                   {"type": "signature_delta", "signature": "sig"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "a_future_event", "x": 1}),
            json!({"type": "content_block_start", "index": 1, "content_block":
                   {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta":
                   {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "message_stop"}),
        ])
        .unwrap();
        assert_eq!(
            out,
            [
                LlmEvent::Text("Hi".into()),
                LlmEvent::Usage {
                    input_tokens: 0,
                    output_tokens: 0
                }
            ]
        );
    }

    #[test]
    fn a_refusal_and_a_stream_without_message_stop_are_errors() {
        let e = feed_all(&[
            json!({"type": "message_start", "message": {}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "refusal"}}),
        ])
        .unwrap_err();
        assert!(matches!(e, ProviderError::Protocol(_)), "{e:?}");
        let e = feed_all(&[json!({"type": "message_start", "message": {}})]).unwrap_err();
        assert!(matches!(e, ProviderError::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn errors_in_the_stream_are_classified_and_redacted() {
        let key = ApiKey::new("sk-ant-k");
        let e = |kind: &str, msg: &str| {
            stream_error(&json!({"type": kind, "message": msg}), Some(&key))
        };
        assert_eq!(
            e("overloaded_error", "Overloaded"),
            ProviderError::Unavailable("error in stream: Overloaded".into())
        );
        assert_eq!(
            e("rate_limit_error", "slow"),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(e("authentication_error", "x"), ProviderError::Auth);
        assert_eq!(
            e("invalid_request_error", "bad sk-ant-k"),
            ProviderError::Protocol("error in stream: bad ***".into())
        );
    }

    #[test]
    fn only_user_messages_carry_images_and_empty_text_is_left_out() {
        let mut ctx = ChatContext::new();
        let img = ImageContent::inline(vec![1u8, 2, 3], "image/png");
        ctx.add_message(ChatRole::Assistant, vec!["".into(), img.clone().into()]);
        ctx.add_message(
            ChatRole::User,
            vec![img.into(), "  ".into(), "this?".into()],
        );
        let (system, turns) = messages(&ctx);
        assert_eq!(system, None);
        assert_eq!(
            turns,
            [json!({"role": "user", "content": [
                {"type": "image", "source":
                    {"type": "base64", "media_type": "image/png", "data": "AQID"}},
                {"type": "text", "text": "this?"},
            ]})]
        );
    }

    #[test]
    fn requests_go_to_v1_messages_under_the_base_url() {
        let url = route(&AnthropicLlm::config("m")).unwrap().url;
        assert_eq!(url.as_str(), "https://api.anthropic.com/v1/messages");
    }
}
