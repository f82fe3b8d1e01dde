//! The OpenAI-compatible Chat Completions provider against a protocol test server: the
//! scripted HTTP/1.1 server of `tests/sse_server` on a local socket, answering as the Chat
//! Completions API documents (`chat.completion.chunk` events over SSE with chunked transfer encoding,
//! `data: [DONE]`, the `{"error": {...}}` bodies with their statuses and `Retry-After`).
//!
//! What hark sends is checked as strictly as what it does with the replies. The behaviour all
//! streamed providers share (retries, timeouts on a paused clock, cuts, cancellation, keys kept
//! out of errors and logs) runs from `tests/sse_server/checks.rs` with this file's wire format.

use crate::sse_server;

use std::sync::Arc;

use hark::agent::context::{ChatContext, ChatRole, ImageContent};
use hark::agent::ToolSpec;
use hark::providers::http::ApiKey;
use hark::providers::llm::{HttpLlmConfig, OpenAiLlm};
use hark::providers::{Llm, LlmEvent, LlmRequest, ToolCallRequest};
use serde_json::{json, Value};
use sse_server::checks::{Protocol, KEY};
use sse_server::{collect, hello, t, Step};
use tokio::sync::Notify;

/// The Chat Completions protocol test server: the scripted server answering with the chunks
/// this file scripts.
use sse_server::ScriptedHttpServer as ChatCompletionsTestServer;

/// A `chat.completion.chunk` event as OpenAI streams it.
fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    let c = json!({
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null,
    });
    format!("data: {c}\n\n")
}

fn text(t: &str) -> String {
    chunk(json!({"content": t}), None)
}

fn usage_chunk(prompt: u32, completion: u32) -> String {
    let c = json!({
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    });
    format!("data: {c}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

fn openai_error(message: &str, kind: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
}

/// The Chat Completions wire format, for the shared checks.
const PROTOCOL: Protocol = Protocol {
    label: "openai",
    config: |base| HttpLlmConfig {
        base_url: format!("{base}/v1"),
        ..OpenAiLlm::config("gpt-4o-mini")
    },
    build: |config| Arc::new(OpenAiLlm::new(config).unwrap()),
    opening: || vec![chunk(json!({"role": "assistant", "content": ""}), None)],
    text,
    closing: || vec![chunk(json!({}), Some("stop")), DONE.into()],
    error_body: |status, message| match status {
        401 => openai_error(message, "invalid_request_error", "invalid_api_key"),
        429 => openai_error(message, "requests", "rate_limit_exceeded"),
        _ => openai_error(message, "server_error", ""),
    },
    stream_error: |message| format!("data: {}\n\n", openai_error(message, "server_error", "")),
};

crate::shared_stream_tests!(PROTOCOL);

fn provider(server: &ChatCompletionsTestServer) -> OpenAiLlm {
    OpenAiLlm::new(PROTOCOL.config_for(server)).unwrap()
}

#[tokio::test]
async fn sends_the_context_tools_and_options_as_chat_completions_specifies() {
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(chunk(json!({"role": "assistant", "content": ""}), None)),
        Step::Send(text("Sunny.")),
        Step::Send(chunk(json!({}), Some("stop"))),
        Step::Send(DONE.into()),
        Step::End,
    ]])
    .await;
    let mut cfg = PROTOCOL.config_for(&server);
    cfg.temperature = Some(0.5);
    cfg.max_tokens = Some(200);
    cfg.headers
        .insert("OpenAI-Organization".into(), "org-test".into());
    let llm = OpenAiLlm::new(cfg).unwrap();

    let mut ctx = ChatContext::new();
    ctx.add_message(ChatRole::System, "You are a weather kiosk.");
    ctx.add_message(
        ChatRole::User,
        vec![
            "Weather in Oslo and Bergen? Here is the sky:".into(),
            ImageContent::url("https://example.com/sky.jpg").into(),
        ],
    );
    ctx.add_message(ChatRole::Assistant, "Let me check.");
    ctx.add_function_call("weather", r#"{"city":"Oslo"}"#, Some("call_a".into()));
    ctx.add_function_call("weather", r#"{"city":"Bergen"}"#, Some("call_b".into()));
    ctx.add_function_output("weather", "rain, 8°C", "call_a", false);
    ctx.add_function_output("weather", "sun, 12°C", "call_b", false);
    let tools = vec![
        ToolSpec {
            name: "weather".into(),
            description: "Current weather in a city.".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}),
        },
        ToolSpec {
            name: "end_call".into(),
            description: "Hang up.".into(),
            parameters: Value::Null,
        },
    ];
    let events = collect(
        llm.chat(LlmRequest {
            context: ctx,
            tools,
        })
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(events, [t("Sunny.")]);

    let [req] = &server.received()[..] else {
        panic!("expected one request: {:?}", server.received())
    };
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(req.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["accept"], "text/event-stream");
    assert_eq!(req.headers["openai-organization"], "org-test");
    assert!(req.headers["user-agent"].starts_with("hark/"));
    assert_eq!(
        req.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a weather kiosk."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Oslo and Bergen? Here is the sky:"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg", "detail": "auto"}},
                ]},
                {"role": "assistant", "content": "Let me check."},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Bergen\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "rain, 8°C"},
                {"role": "tool", "tool_call_id": "call_b", "content": "sun, 12°C"},
            ],
            "tools": [
                {"type": "function", "function": {
                    "name": "weather", "description": "Current weather in a city.",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}}},
                {"type": "function", "function": {
                    "name": "end_call", "description": "Hang up.",
                    "parameters": {"type": "object", "properties": {}}}},
            ],
            "temperature": 0.5,
            "max_tokens": 200,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[tokio::test]
async fn without_a_key_or_tools_neither_is_sent() {
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("Hello.")),
        Step::Send(chunk(json!({}), Some("stop"))),
        Step::Send(DONE.into()),
        Step::End,
    ]])
    .await;
    for key in [None, Some(ApiKey::new("")), Some(ApiKey::new("  "))] {
        let llm = OpenAiLlm::new(HttpLlmConfig {
            api_key: key,
            ..PROTOCOL.config_for(&server)
        })
        .unwrap();
        assert_eq!(
            collect(llm.chat(hello()).await.unwrap()).await,
            [t("Hello.")]
        );
    }
    for req in server.received() {
        assert!(!req.headers.contains_key("authorization"), "{req:?}");
        let body = req.body.as_object().unwrap();
        assert!(!body.contains_key("tools"), "{body:?}");
        assert!(!body.contains_key("temperature") && !body.contains_key("max_tokens"));
        assert_eq!(
            req.body["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}])
        );
    }
}

#[tokio::test]
async fn text_streams_as_it_arrives_then_parallel_tool_calls_and_usage() {
    let go = Arc::new(Notify::new());
    // Two parallel calls, their fragments interleaved by index as OpenAI streams them; an SSE
    // comment, CRLF line ends, and an event split over two chunks along the way.
    let first_call = chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        None,
    );
    let (split_a, split_b) = first_call.split_at(first_call.len() / 2);
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(chunk(json!({"role": "assistant", "content": ""}), None)),
        Step::Send(text("Let me")),
        Step::Wait(go.clone()),
        Step::Send(": keep-alive\n\n".into()),
        Step::Send(text(" check.").replace('\n', "\r\n")),
        Step::Send(split_a.into()),
        Step::Send(split_b.into()),
        Step::Send(chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_t", "type": "function",
                                   "function": {"name": "time", "arguments": ""}}]}),
            None,
        )),
        Step::Send(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}),
            None,
        )),
        Step::Send(chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"tz\":\"CET\"}"}}]}),
            None,
        )),
        Step::Send(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Oslo\"}"}}]}),
            None,
        )),
        Step::Send(chunk(json!({}), Some("tool_calls"))),
        Step::Send(usage_chunk(57, 31)),
        Step::Send(DONE.into()),
        Step::End,
    ]])
    .await;
    let mut stream = provider(&server).chat(hello()).await.unwrap();
    // The first words arrive while the server still holds the rest back.
    assert_eq!(stream.recv().await.unwrap(), t("Let me"));
    go.notify_one();
    let rest = collect(stream).await;
    assert_eq!(
        rest,
        [
            t(" check."),
            Ok(LlmEvent::ToolCall(ToolCallRequest {
                call_id: "call_w".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            })),
            Ok(LlmEvent::ToolCall(ToolCallRequest {
                call_id: "call_t".into(),
                name: "time".into(),
                arguments: r#"{"tz":"CET"}"#.into(),
            })),
            Ok(LlmEvent::Usage {
                input_tokens: 57,
                output_tokens: 31,
            }),
        ]
    );
}
