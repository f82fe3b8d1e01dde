//! The Cartesia provider against a TTS-WebSocket protocol test server: a WebSocket server on a
//! local socket, written here, that speaks Cartesia's `/tts/websocket` protocol as its
//! documentation describes it (`X-API-Key` header, `cartesia_version` query; generation
//! requests on a context with `continue`; `chunk`, `timestamps`, `flush_done`, `done` and
//! `error` replies; `{"context_id", "cancel": true}`).
//!
//! What hark sends is checked as strictly as what it does with the replies. Tests that wait
//! run on a paused tokio clock.

// tungstenite's handshake callback returns its error response by value.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::logs::logs;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hark::providers::http::ApiKey;
use hark::providers::tts::{CartesiaConfig, CartesiaTts};
use hark::providers::{AudioStream, ProviderError, Tts};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "sk_car_test_0123456789abcdef";
const VOICE: &str = "a0e99841-438c-4a64-b679-ae501e7d6091";

/// One step of the server's side of a connection. Replies carry the context ID of the last
/// request received, as the service's do.
#[derive(Clone)]
enum Step {
    /// Refuse the upgrade with this status, headers and JSON body.
    Refuse {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read one request.
    Recv,
    /// Read requests until one with `continue: false` (the end of the context).
    RecvEnd,
    /// A `chunk` with these audio bytes.
    Chunk(Vec<u8>),
    /// A `chunk` for another context (a cancelled generation's late audio).
    OtherContextChunk(Vec<u8>),
    /// Word timestamps and a flush acknowledgement: to be ignored.
    Extras,
    /// `done`.
    Done,
    /// An `error` message with these fields (plus type, done and context).
    Error(Value),
    /// Send this text as is.
    Raw(String),
    /// Send a close frame and stop.
    Close(u16, &'static str),
    /// Drop the connection without a close frame.
    Cut,
    /// Send nothing more; read (and record) until the client goes.
    Hold,
}

/// A connection as the server saw it.
#[derive(Debug, Clone, Default)]
struct Connection {
    target: String,
    /// Header names lowercased.
    headers: BTreeMap<String, String>,
    messages: Vec<Value>,
    client_closed: bool,
}

/// The TTS-WebSocket protocol test server: the n-th connection gets the n-th script (the last
/// one repeats).
struct CartesiaTtsTestServer {
    base_url: String,
    connections: Arc<Mutex<Vec<Connection>>>,
    /// One message per connection whose script has ended.
    ended: mpsc::UnboundedReceiver<()>,
}

impl CartesiaTtsTestServer {
    async fn start(scripts: Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("ws://{}", listener.local_addr().unwrap());
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let log = connections.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // No Nagle delay behind a large message, as on the service.
                tcp.set_nodelay(true).unwrap();
                let script = scripts[n.min(scripts.len() - 1)].clone();
                n += 1;
                let index = {
                    let mut l = log.lock().unwrap();
                    l.push(Connection::default());
                    l.len() - 1
                };
                let (log, ended) = (log.clone(), ended_tx.clone());
                tokio::spawn(async move {
                    serve(tcp, script, log, index).await;
                    let _ = ended.send(());
                });
            }
        });
        CartesiaTtsTestServer {
            base_url,
            connections,
            ended,
        }
    }

    fn connections(&self) -> Vec<Connection> {
        self.connections.lock().unwrap().clone()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn serve(
    tcp: tokio::net::TcpStream,
    script: Vec<Step>,
    log: Arc<Mutex<Vec<Connection>>>,
    index: usize,
) {
    let refusal = match script.first() {
        Some(Step::Refuse {
            status,
            headers,
            body,
        }) => Some((*status, headers.clone(), body.clone())),
        _ => None,
    };
    let seen = log.clone();
    let check = move |req: &Request, resp: Response| {
        {
            let mut l = seen.lock().unwrap();
            l[index].target = req.uri().to_string();
            l[index].headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
        }
        match refusal {
            Some((status, headers, body)) => {
                let mut r = http::Response::new(Some(body));
                *r.status_mut() = status.try_into().unwrap();
                for (k, v) in headers {
                    r.headers_mut().insert(k, v.parse().unwrap());
                }
                Err(r)
            }
            None => Ok(resp),
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
        return;
    };
    let mut context = String::new();
    let record = |m: Message, context: &mut String| -> Option<Value> {
        let mut l = log.lock().unwrap();
        match m {
            Message::Text(t) => {
                let v: Value =
                    serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.to_string()));
                if let Some(id) = v.get("context_id").and_then(Value::as_str) {
                    *context = id.to_owned();
                }
                l[index].messages.push(v.clone());
                Some(v)
            }
            Message::Close(_) => {
                l[index].client_closed = true;
                None
            }
            _ => Some(Value::Null),
        }
    };
    for step in script {
        let reply = match step {
            Step::Refuse { .. } => unreachable!("refused in the handshake"),
            Step::Recv => match ws.next().await {
                Some(Ok(m)) => {
                    if record(m, &mut context).is_none() {
                        return;
                    }
                    continue;
                }
                _ => return,
            },
            Step::RecvEnd => {
                loop {
                    match ws.next().await {
                        Some(Ok(m)) => match record(m, &mut context) {
                            None => return,
                            Some(v) if v["continue"] == json!(false) => break,
                            Some(_) => {}
                        },
                        _ => return,
                    }
                }
                continue;
            }
            Step::Chunk(bytes) => json!({"type": "chunk", "data": b64(&bytes), "done": false,
                "status_code": 206, "step_time": 12.5, "context_id": context}),
            Step::OtherContextChunk(bytes) => {
                json!({"type": "chunk", "data": b64(&bytes), "done": false,
                "status_code": 206, "step_time": 12.5, "context_id": "someone-else"})
            }
            Step::Extras => {
                let t = json!({"type": "timestamps", "done": false, "status_code": 206,
                    "context_id": context,
                    "word_timestamps": {"words": ["Hello"], "start": [0.0], "end": [0.4]}});
                if ws.send(Message::text(t.to_string())).await.is_err() {
                    return;
                }
                json!({"type": "flush_done", "done": false, "flush_done": true, "flush_id": 1,
                       "status_code": 206, "context_id": context})
            }
            Step::Done => {
                json!({"type": "done", "done": true, "status_code": 206, "context_id": context})
            }
            Step::Error(fields) => {
                let mut e = json!({"type": "error", "done": true, "context_id": context});
                for (k, v) in fields.as_object().unwrap() {
                    e[k] = v.clone();
                }
                e
            }
            Step::Raw(text) => Value::String(text),
            Step::Close(code, reason) => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    }))
                    .await;
                while let Some(Ok(m)) = ws.next().await {
                    record(m, &mut context);
                }
                return;
            }
            Step::Cut => return,
            Step::Hold => {
                while let Some(Ok(m)) = ws.next().await {
                    if record(m, &mut context).is_none() {
                        break;
                    }
                }
                return;
            }
        };
        let text = match reply {
            Value::String(raw) => raw,
            v => v.to_string(),
        };
        if ws.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    // Script done: the server keeps the socket open for further contexts; the client closes.
    while let Some(Ok(m)) = ws.next().await {
        if record(m, &mut context).is_none() {
            break;
        }
    }
}

fn pattern(n: usize, seed: i32) -> Vec<i16> {
    (0..n as i32)
        .map(|i| ((i * 1237 + seed * 7919) % 65_536 - 32_768) as i16)
        .collect()
}

fn bytes_of(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn floats(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| s as f32 / 32768.0).collect()
}

fn config(server: &CartesiaTtsTestServer) -> CartesiaConfig {
    CartesiaConfig {
        base_url: server.base_url.clone(),
        api_key: Some(ApiKey::new(KEY)),
        ..CartesiaConfig::new(VOICE)
    }
}

fn provider(server: &CartesiaTtsTestServer) -> CartesiaTts {
    CartesiaTts::new(config(server)).unwrap()
}

fn text(sentences: &[&str]) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    for s in sentences {
        tx.try_send(s.to_string()).unwrap();
    }
    rx
}

async fn collect(mut stream: AudioStream) -> (Vec<f32>, Option<ProviderError>) {
    let mut samples = Vec::new();
    while let Some(chunk) = stream.recv().await {
        match chunk {
            Ok(c) => samples.extend(c),
            Err(e) => {
                assert!(stream.recv().await.is_none(), "nothing after the error");
                return (samples, Some(e));
            }
        }
    }
    (samples, None)
}

#[tokio::test]
async fn sends_the_url_key_and_one_context_of_requests_as_cartesia_specifies() {
    logs();
    let (a, b) = (pattern(480, 1), pattern(331, 2));
    let mut server = CartesiaTtsTestServer::start(vec![vec![
        Step::Recv,
        Step::Chunk(bytes_of(&a)),
        Step::Extras,
        Step::RecvEnd,
        Step::Chunk(bytes_of(&b)),
        Step::Done,
    ]])
    .await;
    let tts = CartesiaTts::new(CartesiaConfig {
        sample_rate: 16_000,
        language: Some("de".into()),
        speed: Some(1.2),
        model: "sonic-2".into(),
        api_version: "2024-11-13".into(),
        ..config(&server)
    })
    .unwrap();
    assert_eq!((tts.label(), tts.sample_rate()), ("cartesia", 16_000));
    let stream = tts
        .synthesize(text(&["Guten Tag.", " ", "Wie geht's?"]))
        .await
        .unwrap();
    let (samples, error) = collect(stream).await;
    assert_eq!(error, None);
    assert_eq!(samples, [floats(&a), floats(&b)].concat());
    server.ended.recv().await.unwrap();

    let [c] = &server.connections()[..] else {
        panic!("one connection: {:?}", server.connections())
    };
    assert_eq!(c.target, "/tts/websocket?cartesia_version=2024-11-13");
    assert_eq!(c.headers["x-api-key"], KEY);
    let context = c.messages[0]["context_id"].as_str().unwrap().to_owned();
    assert!(context.starts_with("hark-"), "{context}");
    let request = |transcript: &str, more: bool| {
        json!({"model_id": "sonic-2", "transcript": transcript, "continue": more,
               "voice": {"mode": "id", "id": VOICE},
               "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
               "language": "de", "generation_config": {"speed": 1.2},
               "max_buffer_delay_ms": 0, "context_id": context})
    };
    assert_eq!(
        c.messages,
        [
            request("Guten Tag. ", true),
            request("Wie geht's? ", true),
            request("", false),
        ],
        "the blank segment is not sent; the key is in no message"
    );
    assert!(
        c.client_closed,
        "hark closes the socket when the context is done"
    );
}

#[tokio::test]
async fn audio_streams_while_the_text_is_still_coming() {
    logs();
    let (a, b) = (pattern(200, 3), pattern(200, 4));
    let server = CartesiaTtsTestServer::start(vec![vec![
        Step::Recv,
        Step::Chunk(bytes_of(&a)),
        Step::Recv,
        Step::Chunk(bytes_of(&b)),
        Step::RecvEnd,
        Step::Done,
    ]])
    .await;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = provider(&server).synthesize(rx).await.unwrap();
    tx.send("One.".into()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    tx.send("Two.".into()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&b));
    let last = server.connections()[0].messages.last().unwrap().clone();
    assert_eq!(
        (&last["transcript"], &last["continue"]),
        (&json!("Two. "), &json!(true)),
        "the context stays open while the text does"
    );
    drop(tx);
    assert!(stream.recv().await.is_none());
}

#[tokio::test]
async fn odd_byte_chunks_are_reassembled_and_other_contexts_are_ignored() {
    logs();
    let a = pattern(700, 5);
    let bytes = bytes_of(&a);
    let mut steps = vec![Step::RecvEnd, Step::OtherContextChunk(vec![1, 2, 3, 4])];
    let mut at = 0;
    for len in [1usize, 3, 5, 7, 301].iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + len).min(bytes.len());
        steps.push(Step::Chunk(bytes[at..end].to_vec()));
        at = end;
    }
    steps.push(Step::Done);
    let server = CartesiaTtsTestServer::start(vec![steps]).await;
    let (samples, error) = collect(
        provider(&server)
            .synthesize(text(&["Hello."]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error, None);
    assert_eq!(samples, floats(&a));
}

#[tokio::test]
async fn refusals_map_like_http_statuses() {
    logs();
    let refuse = |status, headers: Vec<(&'static str, String)>| Step::Refuse {
        status,
        headers,
        body: json!({"error": "Invalid API key"}).to_string(),
    };
    let server = CartesiaTtsTestServer::start(vec![
        vec![refuse(401, vec![])],
        vec![refuse(429, vec![("retry-after", "2".into())])],
        vec![refuse(503, vec![])],
    ])
    .await;
    let tts = provider(&server);
    let mut errors = Vec::new();
    for _ in 0..3 {
        errors.push(tts.synthesize(text(&["Hi."])).await.unwrap_err());
    }
    assert_eq!(
        errors,
        [
            ProviderError::Auth,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            },
            ProviderError::Unavailable("HTTP 503: Invalid API key".into()),
        ]
    );
}

#[tokio::test]
async fn error_messages_of_both_api_versions_end_the_stream() {
    logs();
    let a = pattern(50, 6);
    let server = CartesiaTtsTestServer::start(vec![
        vec![
            Step::Recv,
            Step::Chunk(bytes_of(&a)),
            Step::Error(json!({"error": "Invalid model: The model is not valid, make sure it is a valid model ID.", "status_code": 400})),
            Step::Hold,
        ],
        vec![
            Step::Recv,
            Step::Error(json!({"title": "Rate limit exceeded", "message": "Too many concurrent requests.",
                               "error_code": "concurrency_limit_exceeded", "status_code": 429,
                               "doc_url": "https://docs.cartesia.ai", "request_id": "r-1"})),
            Step::Hold,
        ],
        vec![
            Step::Recv,
            Step::Error(json!({"title": "Internal error", "message": "Something went wrong.",
                               "error_code": "internal_error", "status_code": 500})),
            Step::Hold,
        ],
    ])
    .await;
    let tts = provider(&server);
    let (samples, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(samples, floats(&a));
    assert_eq!(
        e,
        Some(ProviderError::Protocol(
            "HTTP 400: Invalid model: The model is not valid, make sure it is a valid model ID."
                .into()
        ))
    );
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(e, Some(ProviderError::RateLimited { retry_after: None }));
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(
        e,
        Some(ProviderError::Unavailable(
            "HTTP 500: Internal error: Something went wrong.".into()
        ))
    );
}

#[tokio::test]
async fn malformed_json_a_cut_and_a_close_code_are_errors() {
    logs();
    let a = pattern(40, 7);
    let server = CartesiaTtsTestServer::start(vec![
        vec![
            Step::Recv,
            Step::Raw("{\"type\": \"chunk\", \"data\"".into()),
            Step::Hold,
        ],
        vec![Step::Recv, Step::Chunk(bytes_of(&a)), Step::Cut],
        vec![Step::Recv, Step::Close(1011, "server restarting")],
    ])
    .await;
    let tts = provider(&server);
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert!(
        matches!(&e, Some(ProviderError::Protocol(m)) if m.starts_with("malformed message")),
        "{e:?}"
    );
    let (samples, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(samples, floats(&a));
    assert!(matches!(e, Some(ProviderError::Unavailable(_))), "{e:?}");
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(
        e,
        Some(ProviderError::Unavailable(
            "closed by the service (1011): server restarting".into()
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_context_times_out() {
    logs();
    let a = pattern(40, 8);
    let server = CartesiaTtsTestServer::start(vec![vec![
        Step::RecvEnd,
        Step::Chunk(bytes_of(&a)),
        Step::Hold,
    ]])
    .await;
    let tts = CartesiaTts::new(CartesiaConfig {
        idle_timeout: Duration::from_secs(2),
        ..config(&server)
    })
    .unwrap();
    let mut stream = tts.synthesize(text(&["Hi."])).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    let since = Instant::now();
    assert_eq!(stream.recv().await.unwrap(), Err(ProviderError::Timeout));
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_upgrade_times_out_at_the_connect_deadline() {
    logs();
    // Accepts TCP, never answers the upgrade.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tts = CartesiaTts::new(CartesiaConfig {
        base_url: format!("ws://{}", listener.local_addr().unwrap()),
        api_key: Some(ApiKey::new(KEY)),
        connect_timeout: Duration::from_secs(3),
        ..CartesiaConfig::new(VOICE)
    })
    .unwrap();
    let start = Instant::now();
    assert_eq!(
        tts.synthesize(text(&["Hi."])).await.unwrap_err(),
        ProviderError::Timeout
    );
    assert!(start.elapsed() >= Duration::from_secs(3));
    drop(listener);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_context_and_closes_the_socket() {
    logs();
    let a = pattern(40, 9);
    let mut server = CartesiaTtsTestServer::start(vec![vec![
        Step::Recv,
        Step::Chunk(bytes_of(&a)),
        Step::Hold,
    ]])
    .await;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = provider(&server).synthesize(rx).await.unwrap();
    tx.send("A long story.".into()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), server.ended.recv())
        .await
        .expect("the server saw no disconnect")
        .unwrap();
    let c = &server.connections()[0];
    let context = c.messages[0]["context_id"].clone();
    assert_eq!(
        c.messages.last().unwrap(),
        &json!({"context_id": context, "cancel": true})
    );
    assert!(c.client_closed, "then a close frame");
    drop(tx);
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = logs();

    let server = CartesiaTtsTestServer::start(vec![
        vec![Step::Refuse {
            status: 400,
            headers: vec![],
            body: json!({"error": format!("unknown key {KEY}")}).to_string(),
        }],
        vec![
            Step::Recv,
            Step::Error(json!({"error": format!("key {KEY} has no credits"), "status_code": 402})),
            Step::Hold,
        ],
    ])
    .await;
    let cfg = config(&server);
    let tts = CartesiaTts::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{tts:?}")];
    let e = tts.synthesize(text(&["Hi."])).await.unwrap_err();
    shown.push(format!("{e} {e:?}"));
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    let e = e.expect("an error");
    shown.push(format!("{e} {e:?}"));
    assert!(
        shown
            .iter()
            .any(|s| s.contains("HTTP 400: unknown key ***")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.contains("HTTP 402: key *** has no credits")),
        "{shown:?}"
    );
    // All tests' lines so far: none may hold the key.
    let logs = logs.text();
    assert!(
        logs.contains("TTS"),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}
