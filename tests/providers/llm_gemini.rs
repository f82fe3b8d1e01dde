//! The Gemini provider against a protocol test server: the scripted HTTP/1.1 server of
//! `tests/sse_server` on a local socket, answering as the Gemini API documents for
//! `streamGenerateContent?alt=sse` (each `data:` a whole `GenerateContentResponse` with
//! `candidates[0].content.parts`, `finishReason` and running `usageMetadata`; function calls
//! whole, with or without an id, signed by a `thoughtSignature`; error bodies
//! `{"error": {"code", "message", "status", "details"}}`, 400 `API_KEY_INVALID` for a bad key,
//! `RetryInfo` for a quota).
//!
//! What hark sends is checked as strictly as what it does with the replies. The behaviour all
//! streamed providers share (retries, timeouts on a paused clock, cuts, cancellation, keys kept
//! out of errors and logs) runs from `tests/sse_server/checks.rs` with this file's wire format.

use crate::sse_server;

use std::sync::Arc;

use hark::agent::context::{ChatContext, ChatRole};
use hark::providers::llm::{GeminiLlm, HttpLlmConfig};
use hark::providers::{Llm, LlmEvent, LlmRequest, ProviderError, ToolCallRequest};
use serde_json::{json, Value};
use sse_server::checks::{Protocol, KEY};
use sse_server::{collect, hello, ms, only_request, t, weather_request, Step};
use tokio::sync::Notify;

/// The Gemini-protocol test server: the scripted server answering with the responses this
/// file scripts.
use sse_server::ScriptedHttpServer as GenerateContentTestServer;

const MODEL_PATH: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

/// One `GenerateContentResponse` event: the model's `parts`, a finish reason, and the usage
/// so far (prompt, candidates, thoughts).
fn response(parts: Value, finish: Option<&str>, usage: Option<(u32, u32, u32)>) -> String {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(reason) = finish {
        candidate["finishReason"] = json!(reason);
    }
    let mut r = json!({"candidates": [candidate], "modelVersion": "gemini-2.5-flash",
                       "responseId": "resp_test"});
    if let Some((prompt, candidates, thoughts)) = usage {
        r["usageMetadata"] = json!({"promptTokenCount": prompt,
            "candidatesTokenCount": candidates, "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + candidates + thoughts});
    }
    format!("data: {r}\r\n\r\n")
}

fn text(t: &str) -> String {
    response(json!([{"text": t}]), None, None)
}

fn stop(usage: (u32, u32, u32)) -> String {
    response(json!([{"text": ""}]), Some("STOP"), Some(usage))
}

/// A Google API error object with the status name the API gives the HTTP `code`.
fn google_error(code: u16, message: &str) -> Value {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json!({"error": {"code": code, "message": message, "status": status}})
}

/// The Gemini wire format, for the shared checks.
const PROTOCOL: Protocol = Protocol {
    label: "gemini",
    config: |base| HttpLlmConfig {
        base_url: base.to_owned(),
        ..GeminiLlm::config("gemini-2.5-flash")
    },
    build: |config| Arc::new(GeminiLlm::new(config).unwrap()),
    opening: Vec::new,
    text,
    closing: || vec![stop((12, 5, 0))],
    error_body: |status, message| google_error(status, message).to_string(),
    stream_error: |message| format!("data: {}\r\n\r\n", google_error(503, message)),
};

crate::shared_stream_tests!(PROTOCOL);

fn provider(server: &GenerateContentTestServer) -> GeminiLlm {
    GeminiLlm::new(PROTOCOL.config_for(server)).unwrap()
}

fn call(id: &str, name: &str, arguments: &str) -> Result<LlmEvent, ProviderError> {
    Ok(LlmEvent::ToolCall(ToolCallRequest {
        call_id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }))
}

#[tokio::test]
async fn sends_the_context_tools_and_options_as_the_gemini_api_specifies() {
    let server = GenerateContentTestServer::start(vec![PROTOCOL.answer(&["Sunny."])]).await;
    let mut cfg = PROTOCOL.config_for(&server);
    cfg.temperature = Some(0.5);
    cfg.max_tokens = Some(300);
    let llm = GeminiLlm::new(cfg).unwrap();

    // The first call came without an id: hark made one up, which is not sent back.
    let request = weather_request("call_hark_900", "fc_b");
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
        ("POST", MODEL_PATH)
    );
    assert_eq!(req.headers["x-goog-api-key"], KEY);
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["accept"], "text/event-stream");
    assert!(!req.headers.contains_key("authorization"), "{req:?}");
    assert!(!req.path.contains("key="), "the key never goes in the URL");
    assert_eq!(
        req.body,
        json!({
            "contents": [
                {"role": "model", "parts": [{"text": "Hello! Ask me about the weather."}]},
                {"role": "user", "parts": [
                    {"text": "Weather in Oslo and Bergen? Here is the sky:"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
                    {"fileData": {"fileUri": "https://example.com/sky.png"}},
                ]},
                {"role": "model", "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "weather", "args": {"city": "Oslo"}},
                     "thoughtSignature": "skip_thought_signature_validator"},
                    {"functionCall": {"name": "weather", "args": {"city": "Bergen"},
                                      "id": "fc_b"}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather",
                                          "response": {"output": "rain, 8°C"}}},
                    {"functionResponse": {"name": "weather", "id": "fc_b",
                                          "response": {"error": "weather service down"}}},
                    {"text": "And tomorrow?"},
                ]},
            ],
            "systemInstruction": {"parts": [
                {"text": "You are a weather kiosk.\n\nAnswer in one sentence."}]},
            "tools": [{"functionDeclarations": [
                {"name": "weather", "description": "Current weather in a city.",
                 "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                                "required": ["city"]}},
                {"name": "end_call", "description": "Hang up."},
            ]}],
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 300},
        })
    );
}

#[tokio::test]
async fn absent_instructions_tools_and_options_are_left_out() {
    let server = GenerateContentTestServer::start(vec![PROTOCOL.answer(&["Hello."])]).await;
    let mut ctx = ChatContext::new();
    ctx.add_message(ChatRole::User, "Hi!");
    let request = LlmRequest {
        context: ctx,
        tools: vec![],
    };
    collect(provider(&server).chat(request).await.unwrap()).await;
    assert_eq!(
        server.received()[0].body,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi!"}]}]})
    );
}

#[tokio::test]
async fn text_streams_as_it_arrives_then_parallel_calls_whose_signature_goes_back() {
    let go = Arc::new(Notify::new());
    // Thinking-model calls: the first signed and without an id, the second with one.
    let calls = response(
        json!([
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}},
             "thoughtSignature": "c2lnLXdlYXRoZXI="},
            {"functionCall": {"id": "fc_t", "name": "time", "args": {"tz": "CET"}}},
        ]),
        None,
        Some((57, 20, 7)),
    );
    let (split_a, split_b) = calls.split_at(calls.len() / 2);
    let server = GenerateContentTestServer::start(vec![
        vec![
            Step::StartStream,
            Step::Send(response(
                json!([{"text": "Let me"}]),
                None,
                Some((57, 2, 7)),
            )),
            Step::Wait(go.clone()),
            Step::Send(": keep-alive\n\n".into()),
            Step::Send(response(
                json!([{"text": " check."}]),
                None,
                Some((57, 4, 7)),
            )),
            Step::Send(split_a.into()),
            Step::Send(split_b.into()),
            Step::Send(response(json!([]), Some("STOP"), Some((57, 24, 7)))),
            Step::End,
        ],
        PROTOCOL.answer(&["Rain in Oslo."]),
    ])
    .await;
    let llm = provider(&server);
    let mut stream = llm.chat(hello()).await.unwrap();
    // The first words arrive while the server still holds the rest back.
    assert_eq!(stream.recv().await.unwrap(), t("Let me"));
    go.notify_one();
    let rest = collect(stream).await;
    let Ok(LlmEvent::ToolCall(weather)) = &rest[1] else {
        panic!("{rest:?}")
    };
    assert!(weather.call_id.starts_with("call_hark_"), "{weather:?}");
    assert_eq!(
        rest,
        [
            t(" check."),
            call(&weather.call_id, "weather", r#"{"city":"Oslo"}"#),
            call("fc_t", "time", r#"{"tz":"CET"}"#),
            Ok(LlmEvent::Usage {
                input_tokens: 57,
                output_tokens: 31,
            }),
        ]
    );

    // The next request carries the calls back: the signature where the model put it, the
    // made-up id left out, the outputs matched by name.
    let mut ctx = hello().context;
    ctx.add_function_call(
        "weather",
        r#"{"city":"Oslo"}"#,
        Some(weather.call_id.clone()),
    );
    ctx.add_function_call("time", r#"{"tz":"CET"}"#, Some("fc_t".into()));
    ctx.add_function_output("weather", "rain", weather.call_id.clone(), false);
    ctx.add_function_output("time", "09:00", "fc_t", false);
    let request = LlmRequest {
        context: ctx,
        tools: vec![],
    };
    collect(llm.chat(request).await.unwrap()).await;
    assert_eq!(
        server.received()[1].body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hi!"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Oslo"}},
                 "thoughtSignature": "c2lnLXdlYXRoZXI="},
                {"functionCall": {"name": "time", "args": {"tz": "CET"}, "id": "fc_t"}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "rain"}}},
                {"functionResponse": {"name": "time", "id": "fc_t",
                                      "response": {"output": "09:00"}}},
            ]},
        ])
    );
}

#[tokio::test]
async fn a_key_refused_with_400_api_key_invalid_is_auth_and_is_not_retried() {
    let mut body = google_error(400, "API key not valid. Please pass a valid API key.");
    body["error"]["details"] = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID", "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"}}]);
    let server = GenerateContentTestServer::start(vec![vec![Step::Reply {
        status: 400,
        headers: vec![],
        body: body.to_string(),
    }]])
    .await;
    assert_eq!(
        provider(&server).chat(hello()).await.unwrap_err(),
        ProviderError::Auth
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_quota_429_is_retried_after_its_retry_info_delay() {
    let mut body = google_error(429, "You exceeded your current quota.");
    body["error"]["details"] = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                        "retryDelay": "2s"}]);
    let server = GenerateContentTestServer::start(vec![
        vec![Step::Reply {
            status: 429,
            headers: vec![],
            body: body.to_string(),
        }],
        PROTOCOL.answer(&["Hi."]),
    ])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(events[0], t("Hi."));
    let r = server.received();
    let waited = r[1].at - r[0].at;
    assert!(waited >= ms(2000) && waited < ms(2100), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_503_is_retried_then_the_answer_streams() {
    let unavailable = Step::Reply {
        status: 503,
        headers: vec![],
        body: google_error(503, "The model is overloaded. Please try again later.").to_string(),
    };
    let server =
        GenerateContentTestServer::start(vec![vec![unavailable], PROTOCOL.answer(&["Hi."])]).await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(events[0], t("Hi."));
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_safety_stop_is_a_protocol_error_after_the_text_before_it() {
    let server = GenerateContentTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("Well,")),
        Step::Send(response(json!([]), Some("SAFETY"), Some((12, 2, 0)))),
        Step::Hold,
    ]])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(
        events,
        [
            t("Well,"),
            Err(ProviderError::Protocol(
                "the answer was stopped (finishReason SAFETY)".into()
            ))
        ]
    );
}

#[tokio::test]
async fn a_blocked_prompt_is_a_protocol_error_naming_the_reason() {
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"},
                         "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}});
    let server = GenerateContentTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(format!("data: {blocked}\n\n")),
        Step::End,
    ]])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(
        events,
        [Err(ProviderError::Protocol(
            "the prompt was blocked (blockReason SAFETY)".into()
        ))]
    );
}

#[tokio::test]
async fn error_objects_in_the_stream_end_it_with_their_meaning() {
    let cases = [
        (429, ProviderError::RateLimited { retry_after: None }),
        (
            400,
            ProviderError::Protocol("error in stream: Try later.".into()),
        ),
    ];
    for (code, expected) in cases {
        let error = format!("data: {}\n\n", google_error(code, "Try later."));
        let server =
            GenerateContentTestServer::start(vec![PROTOCOL.partial(&["One"], Step::Send(error))])
                .await;
        let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
        assert_eq!(events, [t("One"), Err(expected)], "{code}");
    }
}
