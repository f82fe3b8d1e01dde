//! The OpenAI-compatible Chat Completions provider against a protocol test server: the
//! scripted HTTP/1.1 server of `tests/sse_server` on a local socket, answering as the Chat
//! Completions API documents (`chat.completion.chunk` events over SSE with chunked transfer encoding,
//! `data: [DONE]`, the `{"error": {...}}` bodies with their statuses and `Retry-After`).
//!
//! What hark sends is checked as strictly as what it does with the replies. Tests that wait
//! (retries, stalls) run on a paused tokio clock: the waits are real durations, skipped.

mod sse_server;

use std::sync::Arc;
use std::time::Duration;

use hark::agent::context::{ChatContext, ChatRole, ImageContent};
use hark::agent::ToolSpec;
use hark::providers::http::{ApiKey, RetryPolicy};
use hark::providers::llm::{HttpLlmConfig, OpenAiLlm};
use hark::providers::{Llm, LlmEvent, LlmRequest, ProviderError, ToolCallRequest};
use serde_json::{json, Value};
use sse_server::{collect, paced, print_event_latency, t, Captured, Step};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The Chat Completions protocol test server: the scripted server answering with the chunks
/// this file scripts.
use sse_server::ScriptedHttpServer as ChatCompletionsTestServer;

const KEY: &str = "sk-test-0123456789abcdef";

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

fn config(server: &ChatCompletionsTestServer) -> HttpLlmConfig {
    HttpLlmConfig {
        base_url: format!("{}/v1", server.base_url),
        api_key: Some(ApiKey::new(KEY)),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..OpenAiLlm::config("gpt-4o-mini")
    }
}

fn provider(server: &ChatCompletionsTestServer) -> OpenAiLlm {
    OpenAiLlm::new(config(server)).unwrap()
}

fn hello() -> LlmRequest {
    let mut context = ChatContext::new();
    context.add_message(ChatRole::System, "Be brief.");
    context.add_message(ChatRole::User, "Hi!");
    LlmRequest {
        context,
        tools: vec![],
    }
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
    let mut cfg = config(&server);
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
            ..config(&server)
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

#[tokio::test]
async fn a_refused_key_is_auth_and_is_not_retried() {
    let body = openai_error(
        &format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
        "invalid_request_error",
        "invalid_api_key",
    );
    let server = ChatCompletionsTestServer::start(vec![vec![Step::Reply {
        status: 401,
        headers: vec![],
        body,
    }]])
    .await;
    let err = provider(&server).chat(hello()).await.unwrap_err();
    assert_eq!(err, ProviderError::Auth);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_is_retried_after_retry_after() {
    let server = ChatCompletionsTestServer::start(vec![
        vec![Step::Reply {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: openai_error(
                "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
                "requests",
                "rate_limit_exceeded",
            ),
        }],
        vec![
            Step::StartStream,
            Step::Send(text("Hi.")),
            Step::Send(chunk(json!({}), Some("stop"))),
            Step::Send(DONE.into()),
            Step::End,
        ],
    ])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(events, [t("Hi.")]);
    let r = server.received();
    assert_eq!(r.len(), 2);
    let waited = r[1].at - r[0].at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    assert_eq!(r[0].body, r[1].body, "the same request is sent again");
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_is_not_waited_for() {
    let server = ChatCompletionsTestServer::start(vec![vec![Step::Reply {
        status: 429,
        headers: vec![("retry-after", "60".into())],
        body: openai_error("slow down", "requests", "rate_limit_exceeded"),
    }]])
    .await;
    let err = provider(&server).chat(hello()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_backoff_then_unavailable() {
    let server = ChatCompletionsTestServer::start(vec![vec![Step::Reply {
        status: 500,
        headers: vec![],
        body: openai_error(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            "",
        ),
    }]])
    .await;
    let start = Instant::now();
    let err = provider(&server).chat(hello()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Unavailable(
            "HTTP 500: The server had an error while processing your request. Sorry about that!"
                .into()
        )
    );
    let r = server.received();
    assert_eq!(r.len(), 3, "three attempts");
    // Backoff with jitter: 100 ms then 200 ms, each scaled into [0.5, 1].
    let (w1, w2) = (r[1].at - r[0].at, r[2].at - r[1].at);
    assert!(
        w1 >= Duration::from_millis(50) && w1 <= Duration::from_millis(100),
        "{w1:?}"
    );
    assert!(
        w2 >= Duration::from_millis(100) && w2 <= Duration::from_millis(200),
        "{w2:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_unavailable() {
    // A port nothing listens on: bind, learn it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let llm = OpenAiLlm::new(HttpLlmConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        ..OpenAiLlm::config("m")
    })
    .unwrap();
    let err = llm.chat(hello()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unavailable(m) if m.starts_with("cannot connect")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_malformed_chunk_is_a_protocol_error_after_the_text_before_it() {
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("Hel")),
        Step::Send("data: {\"choices\": [{\"delta\": {\"content\": \"lo\"\n\n".into()),
        Step::Hold,
    ]])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], t("Hel"));
    assert!(
        matches!(&events[1], Err(ProviderError::Protocol(m)) if m.starts_with("malformed chunk")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_error_object_in_the_stream_ends_it_with_the_error() {
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("One")),
        Step::Send(format!(
            "data: {}\n\n",
            openai_error("The model is overloaded.", "server_error", "")
        )),
        Step::Hold,
    ]])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(
        events,
        [
            t("One"),
            Err(ProviderError::Unavailable(
                "error in stream: The model is overloaded.".into()
            ))
        ]
    );
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_an_error_after_the_text_delivered() {
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("The answer")),
        Step::Send(text(" is")),
        Step::Cut,
    ]])
    .await;
    let events = collect(provider(&server).chat(hello()).await.unwrap()).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[..2], [t("The answer"), t(" is")]);
    assert!(
        matches!(&events[2], Err(ProviderError::Unavailable(_))),
        "{events:?}"
    );
    assert_eq!(
        server.received().len(),
        1,
        "a started answer is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_times_out() {
    let server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("Well")),
        Step::Hold,
    ]])
    .await;
    let llm = OpenAiLlm::new(HttpLlmConfig {
        idle_timeout: Duration::from_secs(3),
        ..config(&server)
    })
    .unwrap();
    let mut stream = llm.chat(hello()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), t("Well"));
    let since = Instant::now();
    assert_eq!(stream.recv().await.unwrap(), Err(ProviderError::Timeout));
    assert!(
        since.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        since.elapsed()
    );
    assert!(stream.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn no_answer_at_all_times_out_at_the_first_byte_deadline() {
    let server = ChatCompletionsTestServer::start(vec![vec![Step::Hold]]).await;
    let llm = OpenAiLlm::new(HttpLlmConfig {
        first_byte_timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let start = Instant::now();
    assert_eq!(llm.chat(hello()).await.unwrap_err(), ProviderError::Timeout);
    assert!(start.elapsed() >= Duration::from_secs(4));
    assert_eq!(server.received().len(), 1, "a timeout is not retried");
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let mut server = ChatCompletionsTestServer::start(vec![vec![
        Step::StartStream,
        Step::Send(text("A long story")),
        Step::Hold,
    ]])
    .await;
    // A long idle timeout: the connection must close because of the drop, not a timeout.
    let llm = OpenAiLlm::new(HttpLlmConfig {
        idle_timeout: Duration::from_secs(600),
        ..config(&server)
    })
    .unwrap();
    let mut stream = llm.chat(hello()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), t("A long story"));
    drop(stream);
    // The server's read returns when hark closes the socket; the timeout only bounds a failure.
    tokio::time::timeout(Duration::from_secs(10), server.disconnects.recv())
        .await
        .expect("the server saw no disconnect")
        .unwrap();
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = Captured::default();
    let _guard = logs.install();

    // Every way a service can echo the key back: in a 401, a 400, a 500 and inside the stream.
    let echo = |status| Step::Reply {
        status,
        headers: vec![],
        body: openai_error(&format!("Incorrect API key provided: {KEY}"), "x", "y"),
    };
    let server = ChatCompletionsTestServer::start(vec![
        vec![echo(401)],
        vec![echo(400)],
        vec![echo(500)],
        vec![
            Step::StartStream,
            Step::Send(format!(
                "data: {}\n\n",
                openai_error(&format!("bad key {KEY}"), "server_error", "")
            )),
            Step::Hold,
        ],
    ])
    .await;
    let cfg = HttpLlmConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..config(&server)
    };
    let llm = OpenAiLlm::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{llm:?}")];
    for _ in 0..3 {
        let e = llm.chat(hello()).await.unwrap_err();
        shown.push(format!("{e} {e:?}"));
    }
    for e in collect(llm.chat(hello()).await.unwrap()).await {
        shown.push(format!("{e:?}"));
    }
    assert_eq!(server.received().len(), 4);
    assert!(
        shown
            .iter()
            .any(|s| s.contains("HTTP 400: Incorrect API key provided: ***")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.contains("error in stream: bad key ***")),
        "{shown:?}"
    );
    let logs = logs.text();
    assert!(
        logs.contains("LLM"),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}

/// Measures (prints, never asserts) the time from a chunk leaving the server to its text
/// reaching the caller, with server, reader and caller on two worker threads as on a device;
/// `cargo test --test llm_openai measures -- --nocapture` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_the_time_from_a_chunk_on_the_socket_to_its_event() {
    let (go, n) = (Arc::new(Notify::new()), 200);
    let mut script = vec![Step::StartStream];
    script.extend(paced((0..n).map(|i| text(&format!("w{i} "))), &go));
    script.extend([
        Step::Send(chunk(json!({}), Some("stop"))),
        Step::Send(DONE.into()),
        Step::End,
    ]);
    let server = ChatCompletionsTestServer::start(vec![script]).await;
    let mut stream = provider(&server).chat(hello()).await.unwrap();
    print_event_latency("openai", &server, &mut stream, &go, n).await;
    assert_eq!(collect(stream).await, []);
}
