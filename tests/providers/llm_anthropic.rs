//! The Anthropic Messages provider against a protocol test server: the scripted HTTP/1.1
//! server of `tests/sse_server` on a local socket, answering as the Messages API documents
//! (`event:`/`data:` pairs `message_start`, `content_block_start`, `content_block_delta` with
//! `text_delta` and `input_json_delta`, `content_block_stop`, `message_delta`, `message_stop`,
//! `ping`, `error`; error bodies `{"type": "error", "error": {"type", "message"}}` with their
//! statuses, `retry-after`, and 529 for an overloaded API).
//!
//! What hark sends is checked as strictly as what it does with the replies. The behaviour all
//! streamed providers share (retries, timeouts on a paused clock, cuts, cancellation, keys kept
//! out of errors and logs) runs from `tests/sse_server/checks.rs` with this file's wire format.

use crate::sse_server;

use std::sync::Arc;

use hark::agent::context::{ChatContext, ChatRole};
use hark::providers::llm::{AnthropicLlm, HttpLlmConfig};
use hark::providers::{Llm, LlmEvent, LlmRequest, ProviderError, ToolCallRequest};
use serde_json::{json, Value};
use sse_server::checks::{Protocol, KEY};
use sse_server::{collect, hello, only_request, t, weather_request, Step};
use tokio::sync::Notify;

/// The Messages-protocol test server: the scripted server answering with the events this
/// file scripts.
use sse_server::ScriptedHttpServer as MessagesTestServer;

/// One server-sent event as the Messages API streams it: the `event:` line names the type the
/// JSON carries.
fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
}

fn message_start(input_tokens: u32) -> String {
    event(json!({"type": "message_start", "message": {
        "id": "msg_test", "type": "message", "role": "assistant", "content": [],
        "model": "claude-haiku-4-5-20251001", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 1}}}))
}

fn text_start(index: usize) -> String {
    event(json!({"type": "content_block_start", "index": index,
                 "content_block": {"type": "text", "text": ""}}))
}

fn text_delta(index: usize, text: &str) -> String {
    event(json!({"type": "content_block_delta", "index": index,
                 "delta": {"type": "text_delta", "text": text}}))
}

fn tool_start(index: usize, id: &str, name: &str) -> String {
    event(json!({"type": "content_block_start", "index": index,
                 "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}))
}

fn json_delta(index: usize, partial: &str) -> String {
    event(json!({"type": "content_block_delta", "index": index,
                 "delta": {"type": "input_json_delta", "partial_json": partial}}))
}

fn block_stop(index: usize) -> String {
    event(json!({"type": "content_block_stop", "index": index}))
}

fn message_delta(stop_reason: &str, output_tokens: u32) -> String {
    event(json!({"type": "message_delta",
                 "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                 "usage": {"output_tokens": output_tokens}}))
}

fn message_stop() -> String {
    event(json!({"type": "message_stop"}))
}

fn ping() -> String {
    event(json!({"type": "ping"}))
}

/// The error object of an error body or `error` event.
fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The error body of a reply with `status`, with the error type the API documents for it.
fn error_body(status: u16, message: &str) -> String {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let mut body = anthropic_error(kind, message);
    body["request_id"] = json!("req_test");
    body.to_string()
}

/// The Messages wire format, for the shared checks.
const PROTOCOL: Protocol = Protocol {
    label: "anthropic",
    config: |base| HttpLlmConfig {
        base_url: base.to_owned(),
        ..AnthropicLlm::config("claude-haiku-4-5")
    },
    build: |config| Arc::new(AnthropicLlm::new(config).unwrap()),
    opening: || vec![message_start(12), text_start(0)],
    text: |t| text_delta(0, t),
    closing: || vec![block_stop(0), message_delta("end_turn", 5), message_stop()],
    error_body,
    stream_error: |message| event(anthropic_error("api_error", message)),
};

crate::shared_stream_tests!(PROTOCOL);

fn provider(server: &MessagesTestServer) -> AnthropicLlm {
    AnthropicLlm::new(PROTOCOL.config_for(server)).unwrap()
}

#[tokio::test]
async fn sends_the_context_tools_and_options_as_the_messages_api_specifies() {
    let server = MessagesTestServer::start(vec![PROTOCOL.answer(&["Sunny."])]).await;
    let mut cfg = PROTOCOL.config_for(&server);
    cfg.temperature = Some(0.5);
    cfg.max_tokens = Some(300);
    cfg.headers
        .insert("X-Proxy-Token".into(), "tok-test".into());
    let llm = AnthropicLlm::new(cfg).unwrap();

    let request = weather_request("toolu_a", "toolu_b");
    let events = collect(llm.chat(request).await.unwrap()).await;
    assert_eq!(
        events,
        [
            t("Sunny."),
            Ok(LlmEvent::Usage {
                input_tokens: 12,
                output_tokens: 5
            })
        ]
    );

    let req = only_request(&server);
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(req.headers["x-api-key"], KEY);
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["accept"], "text/event-stream");
    assert_eq!(req.headers["x-proxy-token"], "tok-test");
    assert!(!req.headers.contains_key("authorization"), "{req:?}");
    assert!(req.headers["user-agent"].starts_with("hark/"));
    assert_eq!(
        req.body,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 300,
            "system": "You are a weather kiosk.\n\nAnswer in one sentence.",
            "messages": [
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Hello! Ask me about the weather."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Oslo and Bergen? Here is the sky:"},
                    {"type": "image", "source":
                        {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
                    {"type": "image", "source":
                        {"type": "url", "url": "https://example.com/sky.png"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_a", "name": "weather",
                     "input": {"city": "Oslo"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "weather",
                     "input": {"city": "Bergen"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "rain, 8°C"},
                    {"type": "tool_result", "tool_use_id": "toolu_b",
                     "content": "weather service down", "is_error": true},
                    {"type": "text", "text": "And tomorrow?"},
                ]},
            ],
            "tools": [
                {"name": "weather", "description": "Current weather in a city.",
                 // The schema as the tool gives it (Anthropic takes JSON Schema as is).
                 "input_schema": {"type": "object", "title": "WeatherArgs",
                                  "properties": {"city": {"type": "string"}},
                                  "required": ["city"]}},
                {"name": "end_call", "description": "Hang up.",
                 "input_schema": {"type": "object", "properties": {}}},
            ],
            "temperature": 0.5,
            "stream": true,
        })
    );
}

#[tokio::test]
async fn max_tokens_is_always_sent_and_absent_options_are_left_out() {
    let server = MessagesTestServer::start(vec![PROTOCOL.answer(&["Hello."])]).await;
    let mut ctx = ChatContext::new();
    ctx.add_message(ChatRole::User, "Hi!");
    let request = LlmRequest {
        context: ctx,
        tools: vec![],
    };
    let events = collect(provider(&server).chat(request).await.unwrap()).await;
    assert_eq!(events[0], t("Hello."));
    assert_eq!(
        server.received()[0].body,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi!"}]}],
            "stream": true,
        })
    );
}

#[tokio::test]
async fn text_streams_as_it_arrives_then_each_tool_call_when_its_block_stops() {
    let (go_text, go_call) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    // Text, then two parallel calls whose arguments come in pieces (one piece split over two
    // network chunks), with a ping and CRLF line ends along the way.
    let oslo = json_delta(1, "{\"ci");
    let (split_a, split_b) = oslo.split_at(oslo.len() / 2);
    let server = MessagesTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(message_start(57)),
        Step::Send(text_start(0)),
        Step::Send(text_delta(0, "Let me")),
        Step::Wait(go_text.clone()),
        Step::Send(ping()),
        Step::Send(text_delta(0, " check.").replace('\n', "\r\n")),
        Step::Send(block_stop(0)),
        Step::Send(tool_start(1, "toolu_w", "weather")),
        Step::Send(json_delta(1, "")),
        Step::Send(split_a.into()),
        Step::Send(split_b.into()),
        Step::Send(json_delta(1, "ty\": \"Oslo\"}")),
        Step::Send(block_stop(1)),
        Step::Wait(go_call.clone()),
        Step::Send(tool_start(2, "toolu_t", "time")),
        Step::Send(json_delta(2, "{\"tz\": \"CET\"}")),
        Step::Send(block_stop(2)),
        Step::Send(message_delta("tool_use", 31)),
        Step::Send(message_stop()),
        Step::End,
    ]])
    .await;
    let mut stream = provider(&server).chat(hello()).await.unwrap();
    // The first words arrive while the server still holds the rest back.
    assert_eq!(stream.recv().await.unwrap(), t("Let me"));
    go_text.notify_one();
    assert_eq!(stream.recv().await.unwrap(), t(" check."));
    // The first call is passed on when its block stops, before the answer ends.
    assert_eq!(
        stream.recv().await.unwrap(),
        Ok(LlmEvent::ToolCall(ToolCallRequest {
            call_id: "toolu_w".into(),
            name: "weather".into(),
            arguments: r#"{"city": "Oslo"}"#.into(),
        }))
    );
    go_call.notify_one();
    assert_eq!(
        collect(stream).await,
        [
            Ok(LlmEvent::ToolCall(ToolCallRequest {
                call_id: "toolu_t".into(),
                name: "time".into(),
                arguments: r#"{"tz": "CET"}"#.into(),
            })),
            Ok(LlmEvent::Usage {
                input_tokens: 57,
                output_tokens: 31,
            }),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn overloaded_529_is_retried_then_the_answer_streams() {
    let overloaded = Step::Reply {
        status: 529,
        headers: vec![],
        body: error_body(529, "Overloaded"),
    };
    let server = MessagesTestServer::start(vec![
        vec![overloaded.clone()],
        vec![overloaded],
        PROTOCOL.answer(&["Hi."]),
    ])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(events[0], t("Hi."));
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn error_events_in_the_stream_end_it_with_their_meaning() {
    let cases = [
        (
            "rate_limit_error",
            ProviderError::RateLimited { retry_after: None },
        ),
        (
            "invalid_request_error",
            ProviderError::Protocol("error in stream: Overloaded".into()),
        ),
    ];
    for (kind, expected) in cases {
        let server = MessagesTestServer::start(vec![PROTOCOL.partial(
            &["One"],
            Step::Send(event(anthropic_error(kind, "Overloaded"))),
        )])
        .await;
        let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
        assert_eq!(events, [t("One"), Err(expected)], "{kind}");
    }
}
