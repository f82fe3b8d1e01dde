//! Google's Gemini API, `streamGenerateContent` with function declarations.
//!
//! A request is `POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse` with the
//! key in the `x-goog-api-key` header (never in the query string, where it would sit in every
//! proxy's log). The instructions go in `systemInstruction`; the conversation is `contents`,
//! alternating `user` and `model` turns of parts (`text`, `inlineData` images, the model's
//! `functionCall`s and the user's `functionResponse`s); tools are `functionDeclarations` in
//! Gemini's schema dialect. Each server-sent event is a whole `GenerateContentResponse`:
//! text parts are passed on as they arrive, function calls (never split) at once, and the
//! answer ends with the candidate's `finishReason`; the usage (`usageMetadata`, running
//! totals) goes out at the end. A finish for safety, recitation and the like, or a blocked
//! prompt, ends the stream with [`ProviderError::Protocol`] naming the reason.
//!
//! Gemini may leave a call without an id: it gets a generated one (`call_hark_<n>`), and its
//! output is matched back by the function's name, as the API does. Thinking models (Gemini 2.5
//! and 3) sign their calls with a `thoughtSignature` that must come back with the call in the
//! next request (Gemini 3 refuses a call without one); the provider keeps the last signatures
//! it saw by call id and sends them back, or Google's documented placeholder for a call it has
//! none for (a call from another provider, or from before a restart).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{
    arguments_object, join_url, new_call_id, stream_error_message, Answer, Endpoint, HttpLlmConfig,
    HttpLlmError, KeyHeader, Route, Turns, GENERATED_CALL_ID,
};
use super::sse::SseEvent;
use crate::agent::context::{ChatContent, ChatContext, ChatItem, ChatRole, ImageSource};
use crate::agent::schema::gemini_function_declaration;
use crate::providers::http::{self, ApiKey};
use crate::providers::{Llm, LlmEvent, LlmRequest, LlmStream, ProviderError, ToolCallRequest};

/// Google's Gemini API endpoint, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The `thoughtSignature` Google documents for a function call whose real signature is not
/// known (history from another model or a restart): it tells the API to skip the check.
pub const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

/// Signatures remembered per provider: enough for the calls of the conversations in flight.
const SIGNATURES: usize = 64;

/// A Gemini LLM. Cheap to share: one per configured provider, used by every session.
#[derive(Debug)]
pub struct GeminiLlm {
    endpoint: Endpoint,
    signatures: Arc<Signatures>,
}

impl GeminiLlm {
    /// Google's endpoint with `model` (e.g. `gemini-2.5-flash`) and the default timeouts and
    /// retries.
    pub fn config(model: impl Into<String>) -> HttpLlmConfig {
        HttpLlmConfig::new(DEFAULT_BASE_URL, model)
    }

    /// Checks the config and builds the provider on a client of its own.
    pub fn new(config: HttpLlmConfig) -> Result<GeminiLlm, HttpLlmError> {
        let endpoint = Endpoint::new("gemini", &config, route(&config)?)?;
        Ok(GeminiLlm {
            endpoint,
            signatures: Arc::default(),
        })
    }

    /// The JSON body for `request`: the turns as `contents`, the instructions as
    /// `systemInstruction`, the tools as one `functionDeclarations` list, and the sampling
    /// options that are set as `generationConfig` (each left out when empty).
    pub fn request_body(&self, request: &LlmRequest) -> Value {
        let (system, contents) = contents(&request.context, &self.signatures);
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if let Some(system) = system {
            body.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system}]}),
            );
        }
        if !request.tools.is_empty() {
            let declarations: Vec<Value> = request
                .tools
                .iter()
                .map(gemini_function_declaration)
                .collect();
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
        }
        let mut generation = Map::new();
        if let Some(t) = self.endpoint.temperature {
            generation.insert("temperature".into(), json!(t));
        }
        if let Some(m) = self.endpoint.max_tokens {
            generation.insert("maxOutputTokens".into(), json!(m));
        }
        if !generation.is_empty() {
            body.insert("generationConfig".into(), Value::Object(generation));
        }
        Value::Object(body)
    }
}

#[async_trait]
impl Llm for GeminiLlm {
    fn label(&self) -> &str {
        self.endpoint.label
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        self.endpoint.ping().await
    }

    async fn chat(&self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = self.request_body(&request);
        let answer = ResponseStream {
            signatures: self.signatures.clone(),
            usage: None,
            finished: false,
        };
        self.endpoint.stream(&body, &request, answer).await
    }
}

/// Checks the URL, headers and key of `config` without building a client, so a config file
/// can be validated when it is loaded.
pub fn check(config: &HttpLlmConfig) -> Result<(), HttpLlmError> {
    Endpoint::check(config, &route(config)?)
}

/// `POST {base}/v1beta/models/{model}:streamGenerateContent?alt=sse` with `x-goog-api-key`;
/// the model may be given with or without its `models/` prefix. Pinged with
/// `GET {base}/v1beta/models`.
fn route(config: &HttpLlmConfig) -> Result<Route, HttpLlmError> {
    let ping = join_url(&config.base_url, "v1beta/models")?;
    let mut url = ping.clone();
    let model = config.model.trim();
    let model = model.strip_prefix("models/").unwrap_or(model);
    url.path_segments_mut()
        .map_err(|()| HttpLlmError::InvalidBaseUrl("not a base for a path".into()))?
        .pop_if_empty()
        .push(&format!("{model}:streamGenerateContent"));
    url.set_query(Some("alt=sse"));
    Ok(Route {
        status_error,
        ..Route::new(url, ping, KeyHeader::Named("x-goog-api-key"), &[])
    })
}

/// The chat context as Gemini's `systemInstruction` text and `contents`.
///
/// System and developer messages are joined (blank-line separated) into the instructions.
/// Every other item becomes parts of a `user` or `model` turn, consecutive items of one role
/// merged (parallel calls are one turn, their responses the next): text (empty text left out),
/// images of user messages (`inlineData`, or `fileData` for a URL), the model's
/// `functionCall`s (arguments as an object, the id when the model gave one, the thought
/// signature) and the `functionResponse`s (`{"output": …}`, or `{"error": …}` for a failed
/// tool, as the API's field documents).
fn contents(context: &ChatContext, signatures: &Signatures) -> (Option<String>, Vec<Value>) {
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
                    "model"
                };
                for content in &m.content {
                    match content {
                        ChatContent::Text(t) if !t.trim().is_empty() => {
                            turns.push(role, json!({"text": t}));
                        }
                        ChatContent::Image(img) if role == "user" => {
                            turns.push(role, image_part(img.source()));
                        }
                        _ => {}
                    }
                }
            }
            ChatItem::FunctionCall(c) => {
                let mut call = json!({
                    "name": c.name,
                    "args": arguments_object("gemini", &c.name, &c.arguments),
                });
                if let Some(id) = service_id(&c.call_id) {
                    call["id"] = json!(id);
                }
                let mut part = json!({"functionCall": call});
                let first_of_turn = !turns
                    .current("model")
                    .iter()
                    .any(|p| p.get("functionCall").is_some());
                let known = c
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("thought_signature"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| signatures.get(&c.call_id));
                match known {
                    Some(signature) => part["thoughtSignature"] = json!(signature),
                    // Only the first call of a step carries the signature.
                    None if first_of_turn => {
                        part["thoughtSignature"] = json!(PLACEHOLDER_SIGNATURE)
                    }
                    None => {}
                }
                turns.push("model", part);
            }
            ChatItem::FunctionCallOutput(o) => {
                let name = if o.name.is_empty() {
                    // The API matches outputs by name: take it from the call.
                    context
                        .items()
                        .iter()
                        .find(|i| matches!(i, ChatItem::FunctionCall(c) if c.call_id == o.call_id))
                        .and_then(ChatItem::tool_name)
                        .unwrap_or_default()
                } else {
                    o.name.as_str()
                };
                let key = if o.is_error { "error" } else { "output" };
                let mut response = json!({"name": name, "response": {key: o.output}});
                if let Some(id) = service_id(&o.call_id) {
                    response["id"] = json!(id);
                }
                turns.push("user", json!({"functionResponse": response}));
            }
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, turns.into_json("parts"))
}

/// The id to send for a call: the service's (or another provider's) own, not one hark made up
/// for a call that came without.
fn service_id(call_id: &str) -> Option<&str> {
    (!call_id.is_empty() && !call_id.starts_with(GENERATED_CALL_ID)).then_some(call_id)
}

fn image_part(source: &ImageSource) -> Value {
    match source {
        ImageSource::Url(url) => json!({"fileData": {"fileUri": url}}),
        ImageSource::Inline { data, mime_type } => json!({"inlineData": {
            "mimeType": mime_type,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        }}),
    }
}

/// The thought signatures of recent calls, by call id, oldest dropped first.
#[derive(Default)]
struct Signatures(Mutex<VecDeque<(String, String)>>);

impl Signatures {
    fn remember(&self, call_id: String, signature: String) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() == SIGNATURES {
            all.pop_front();
        }
        all.push_back((call_id, signature));
    }

    fn get(&self, call_id: &str) -> Option<String> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .rev()
            .find(|(id, _)| id == call_id)
            .map(|(_, s)| s.clone())
    }
}

// The signatures are opaque blobs: how many there are is all a log needs.
impl std::fmt::Debug for Signatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |a| a.len());
        write!(f, "Signatures({n})")
    }
}

/// One `GenerateContentResponse` (or an error sent in its place), as far as it is read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    finish_message: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: Option<String>,
    /// A thought summary (only sent when asked for): not spoken.
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<FunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    thoughts_token_count: u32,
}

/// What the responses of one answer add up to.
struct ResponseStream {
    signatures: Arc<Signatures>,
    usage: Option<Usage>,
    finished: bool,
}

impl Answer for ResponseStream {
    fn feed(
        &mut self,
        event: &SseEvent,
        key: Option<&ApiKey>,
        out: &mut Vec<LlmEvent>,
    ) -> Result<bool, ProviderError> {
        let chunk: Chunk = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::Protocol(format!("malformed response: {e}")))?;
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            return Err(google_error(&error, key));
        }
        if let Some(usage) = chunk.usage_metadata {
            // Running totals: the last one is the answer's.
            self.usage = Some(usage);
        }
        // One candidate is asked for (no `candidateCount`).
        let Some(candidate) = chunk.candidates.into_iter().next() else {
            return match chunk.prompt_feedback.and_then(|f| f.block_reason) {
                Some(reason) => Err(ProviderError::Protocol(format!(
                    "the prompt was blocked (blockReason {reason})"
                ))),
                None => Ok(false),
            };
        };
        let parts = candidate.content.map(|c| c.parts).unwrap_or_default();
        for part in parts.into_iter().filter(|p| !p.thought) {
            if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                out.push(LlmEvent::Text(text));
            }
            if let Some(call) = part.function_call {
                out.push(self.tool_call(call, part.thought_signature));
            }
        }
        let Some(reason) = candidate.finish_reason.filter(|r| !r.is_empty()) else {
            return Ok(false);
        };
        self.finished = true;
        match reason.as_str() {
            "STOP" | "MAX_TOKENS" => Ok(true),
            _ => {
                let detail = candidate
                    .finish_message
                    .map(|m| format!(": {}", http::shorten(m.trim())))
                    .unwrap_or_default();
                Err(ProviderError::Protocol(format!(
                    "the answer was stopped (finishReason {reason}){detail}"
                )))
            }
        }
    }

    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), ProviderError> {
        if !self.finished {
            return Err(ProviderError::Unavailable(
                "the stream ended before the answer was complete".into(),
            ));
        }
        if let Some(u) = self.usage.take() {
            out.push(LlmEvent::Usage {
                input_tokens: u.prompt_token_count,
                // Thinking tokens are generated (and billed) output too.
                output_tokens: u.candidates_token_count + u.thoughts_token_count,
            });
        }
        Ok(())
    }
}

impl ResponseStream {
    fn tool_call(&self, call: FunctionCall, signature: Option<String>) -> LlmEvent {
        let call_id = call
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(new_call_id);
        if let Some(signature) = signature.filter(|s| !s.is_empty()) {
            self.signatures.remember(call_id.clone(), signature);
        }
        let arguments = match call.args {
            Some(args @ Value::Object(_)) => args.to_string(),
            _ => "{}".to_owned(),
        };
        LlmEvent::ToolCall(ToolCallRequest {
            call_id,
            name: call.name,
            arguments,
        })
    }
}

/// A Google API error object `{"code", "message", "status", "details"}`, by its status.
fn google_error(error: &Value, key: Option<&ApiKey>) -> ProviderError {
    if invalid_key(error) {
        return ProviderError::Auth;
    }
    let message = format!("error in stream: {}", stream_error_message(error, key));
    match error.get("status").and_then(Value::as_str).unwrap_or("") {
        "RESOURCE_EXHAUSTED" => ProviderError::RateLimited {
            retry_after: retry_delay(error),
        },
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => ProviderError::Auth,
        "DEADLINE_EXCEEDED" => ProviderError::Timeout,
        "UNAVAILABLE" | "INTERNAL" | "UNKNOWN" => ProviderError::Unavailable(message),
        _ => ProviderError::Protocol(message),
    }
}

/// An error reply: as any HTTP service's, except that Gemini refuses a bad key with 400
/// `API_KEY_INVALID` (an authentication failure), and says how long to back off in a
/// `RetryInfo` detail rather than `Retry-After`.
fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    key: Option<&ApiKey>,
) -> ProviderError {
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("error").map(Value::take));
    if error.as_ref().is_some_and(invalid_key) {
        return ProviderError::Auth;
    }
    match http::status_error(status, headers, body, key) {
        ProviderError::RateLimited { retry_after: None } => ProviderError::RateLimited {
            retry_after: error.as_ref().and_then(retry_delay),
        },
        other => other,
    }
}

fn details(error: &Value) -> impl Iterator<Item = &Value> {
    error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn invalid_key(error: &Value) -> bool {
    details(error).any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
}

/// A `google.rpc.RetryInfo` detail's `retryDelay` (a protobuf duration such as `"37s"`).
fn retry_delay(error: &Value) -> Option<Duration> {
    details(error).find_map(|d| {
        let text = d.get("retryDelay")?.as_str()?.strip_suffix('s')?;
        Duration::try_from_secs_f64(text.parse().ok()?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(
        stream: &mut ResponseStream,
        chunks: &[Value],
    ) -> Result<Vec<LlmEvent>, ProviderError> {
        let mut out = Vec::new();
        for c in chunks {
            let event = SseEvent {
                event: String::new(),
                data: c.to_string(),
            };
            if stream.feed(&event, None, &mut out)? {
                break;
            }
        }
        stream.end(&mut out)?;
        Ok(out)
    }

    fn stream() -> ResponseStream {
        ResponseStream {
            signatures: Arc::default(),
            usage: None,
            finished: false,
        }
    }

    #[test]
    fn a_call_without_id_gets_one_and_its_signature_is_remembered() {
        let mut s = stream();
        let out = feed_all(
            &mut s,
            &[
                json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "hang_up"}, "thoughtSignature": "c2ln"},
                {"text": "thinking...", "thought": true},
            ]}, "finishReason": "STOP"}]}),
            ],
        )
        .unwrap();
        let [LlmEvent::ToolCall(c)] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(c.call_id.starts_with("call_hark_"), "{c:?}");
        assert_eq!((c.name.as_str(), c.arguments.as_str()), ("hang_up", "{}"));
        assert_eq!(s.signatures.get(&c.call_id).as_deref(), Some("c2ln"));
    }

    #[test]
    fn calls_go_back_with_their_signature_or_the_placeholder_and_outputs_by_name() {
        let signatures = Signatures::default();
        signatures.remember("call_hark_7".into(), "real-sig".into());
        let mut ctx = ChatContext::new();
        ctx.add_message(ChatRole::User, "Weather in Oslo and time?");
        ctx.add_function_call("weather", r#"{"city":"Oslo"}"#, Some("call_hark_7".into()));
        ctx.add_function_call("time", "", Some("fc_2".into()));
        ctx.add_function_output("", "rain", "call_hark_7", false);
        ctx.add_function_output("time", "no clock", "fc_2", true);
        ctx.add_function_call("weather", "{}", Some("call_other".into()));
        let (_, contents) = contents(&ctx, &signatures);
        assert_eq!(
            contents[1..],
            [
                json!({"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Oslo"}},
                     "thoughtSignature": "real-sig"},
                    {"functionCall": {"name": "time", "args": {}, "id": "fc_2"}},
                ]}),
                json!({"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"output": "rain"}}},
                    {"functionResponse": {"name": "time", "response": {"error": "no clock"},
                                          "id": "fc_2"}},
                ]}),
                json!({"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {}, "id": "call_other"},
                     "thoughtSignature": PLACEHOLDER_SIGNATURE},
                ]}),
            ]
        );
    }

    #[test]
    fn safety_stops_and_blocked_prompts_are_protocol_errors_naming_the_reason() {
        let e = feed_all(
            &mut stream(),
            &[json!({"candidates": [{"finishReason": "SAFETY"}]})],
        )
        .unwrap_err();
        assert_eq!(
            e,
            ProviderError::Protocol("the answer was stopped (finishReason SAFETY)".into())
        );
        let e = feed_all(
            &mut stream(),
            &[json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})],
        )
        .unwrap_err();
        assert_eq!(
            e,
            ProviderError::Protocol(
                "the prompt was blocked (blockReason PROHIBITED_CONTENT)".into()
            )
        );
        let e = feed_all(&mut stream(), &[json!({"candidates": []})]).unwrap_err();
        assert!(matches!(e, ProviderError::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn error_replies_read_the_key_reason_and_the_retry_delay() {
        let h = HeaderMap::new();
        let bad_key = json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}});
        assert_eq!(
            status_error(StatusCode::BAD_REQUEST, &h, &bad_key.to_string(), None),
            ProviderError::Auth
        );
        let quota = json!({"error": {"code": 429, "message": "You exceeded your current quota.",
            "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "1.5s"}]}});
        assert_eq!(
            status_error(StatusCode::TOO_MANY_REQUESTS, &h, &quota.to_string(), None),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            google_error(&quota["error"], None),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            google_error(
                &json!({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}),
                None
            ),
            ProviderError::Unavailable("error in stream: The model is overloaded.".into())
        );
    }

    #[test]
    fn the_model_goes_in_the_path_with_or_without_its_prefix() {
        for model in ["gemini-2.5-flash", "models/gemini-2.5-flash"] {
            let url = route(&GeminiLlm::config(model)).unwrap().url;
            assert_eq!(
                url.as_str(),
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            );
        }
    }
}
