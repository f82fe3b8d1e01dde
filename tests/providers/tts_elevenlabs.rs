//! The ElevenLabs provider against a stream-input protocol test server: a WebSocket server on
//! a local socket, written here, that speaks the stream-input protocol as ElevenLabs documents
//! it (`xi-api-key` header, a first message of one space with the settings, `{"text": …}`
//! messages, `{"text": ""}` to end; `{"audio": base64, "normalizedAlignment": …}` replies,
//! `{"isFinal": true}` last, `{"message", "error", "code"}` errors and close frames).
//!
//! What hark sends is checked as strictly as what it does with the replies. Tests that wait
//! (stalls, keep-alive) run on a paused tokio clock: the waits are real durations, skipped.

// tungstenite's handshake callback returns its error response by value.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::logs::logs;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hark::providers::http::ApiKey;
use hark::providers::tts::{ElevenLabsConfig, ElevenLabsTts};
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

const KEY: &str = "xi-test-0123456789abcdef";
const VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

/// One step of the server's side of a connection.
#[derive(Clone)]
enum Step {
    /// Refuse the upgrade with this status, headers and JSON body.
    Refuse {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read one client message.
    Recv,
    /// Read client messages until the end of input (`{"text": ""}`).
    RecvEnd,
    /// Send a text message.
    Send(String),
    /// Send a close frame and stop.
    Close(u16, &'static str),
    /// Drop the connection without a close frame.
    Cut,
    /// Send nothing more; read (and record) until the client goes, then report it.
    Hold,
}

/// A connection as the server saw it.
#[derive(Debug, Clone, Default)]
struct Connection {
    /// Path and query of the upgrade request.
    target: String,
    /// Header names lowercased.
    headers: BTreeMap<String, String>,
    /// The client's messages, parsed, with when they arrived.
    messages: Vec<(Value, Instant)>,
    /// Whether the client sent a close frame (rather than dropping the TCP connection).
    client_closed: bool,
}

impl Connection {
    fn messages(&self) -> Vec<Value> {
        self.messages.iter().map(|(m, _)| m.clone()).collect()
    }
}

/// The stream-input protocol test server: the n-th connection gets the n-th script (the last
/// one repeats).
struct StreamInputTestServer {
    base_url: String,
    connections: Arc<Mutex<Vec<Connection>>>,
    /// One message per connection whose script has ended (for `Hold`: the client went).
    ended: mpsc::UnboundedReceiver<()>,
}

impl StreamInputTestServer {
    async fn start(scripts: Vec<Vec<Step>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("ws://{}/v1", listener.local_addr().unwrap());
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let log = connections.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // As the service (and hark's client) do: a small message behind a large one
                // must not wait for a delayed ACK, least of all on a paused clock.
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
        StreamInputTestServer {
            base_url,
            connections,
            ended,
        }
    }

    fn connections(&self) -> Vec<Connection> {
        self.connections.lock().unwrap().clone()
    }
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
            let c = &mut l[index];
            c.target = req.uri().to_string();
            c.headers = req
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
    let record = |m: Message| -> Option<Value> {
        let mut l = log.lock().unwrap();
        match m {
            Message::Text(t) => {
                let v = serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.to_string()));
                l[index].messages.push((v.clone(), Instant::now()));
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
        match step {
            Step::Refuse { .. } => unreachable!("refused in the handshake"),
            Step::Recv => match ws.next().await {
                Some(Ok(m)) => {
                    if record(m).is_none() {
                        return;
                    }
                }
                _ => return,
            },
            Step::RecvEnd => loop {
                match ws.next().await {
                    Some(Ok(m)) => match record(m) {
                        None => return,
                        Some(v) if v == json!({"text": ""}) => break,
                        Some(_) => {}
                    },
                    _ => return,
                }
            },
            Step::Send(text) => {
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            Step::Close(code, reason) => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    }))
                    .await;
                // Drain until the client answers the close.
                while let Some(Ok(m)) = ws.next().await {
                    record(m);
                }
                return;
            }
            Step::Cut => return,
            Step::Hold => {
                while let Some(Ok(m)) = ws.next().await {
                    if record(m).is_none() {
                        break;
                    }
                }
                return;
            }
        }
    }
    // Script done: a normal close, as the service does after the final message.
    let _ = ws.close(None).await;
    while let Some(Ok(m)) = ws.next().await {
        record(m);
    }
}

/// A known PCM pattern spanning the 16-bit range.
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

/// An audio message as the service sends it (alignment included, which hark ignores).
fn audio(bytes: &[u8]) -> String {
    json!({
        "audio": base64::engine::general_purpose::STANDARD.encode(bytes),
        "isFinal": null,
        "normalizedAlignment": {"charStartTimesMs": [0, 3, 7], "charsDurationsMs": [3, 4, 4], "chars": ["H", "i", " "]},
        "alignment": {"charStartTimesMs": [0, 3, 7], "charsDurationsMs": [3, 4, 4], "chars": ["H", "i", " "]},
    })
    .to_string()
}

fn final_message() -> String {
    json!({"audio": null, "isFinal": true, "normalizedAlignment": null, "alignment": null})
        .to_string()
}

fn config(server: &StreamInputTestServer) -> ElevenLabsConfig {
    ElevenLabsConfig {
        base_url: server.base_url.clone(),
        api_key: Some(ApiKey::new(KEY)),
        ..ElevenLabsConfig::new(VOICE)
    }
}

fn provider(server: &StreamInputTestServer) -> ElevenLabsTts {
    ElevenLabsTts::new(config(server)).unwrap()
}

/// A text channel already holding `sentences`, closed unless `keep_open`.
fn text(sentences: &[&str]) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    for s in sentences {
        tx.try_send(s.to_string()).unwrap();
    }
    rx
}

/// Every sample until the stream closes, and the error it ended with.
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
async fn sends_the_url_key_settings_and_sentences_as_stream_input_specifies() {
    logs();
    let (a, b) = (pattern(480, 1), pattern(333, 2));
    let mut server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
        Step::RecvEnd,
        Step::Send(audio(&bytes_of(&b))),
        Step::Send(final_message()),
    ]])
    .await;
    let tts = ElevenLabsTts::new(ElevenLabsConfig {
        sample_rate: 16_000,
        language: Some("en".into()),
        stability: Some(0.4),
        speed: Some(1.1),
        chunk_length_schedule: Some(vec![50, 120]),
        model: "eleven_turbo_v2_5".into(),
        ..config(&server)
    })
    .unwrap();
    assert_eq!((tts.label(), tts.sample_rate()), ("elevenlabs", 16_000));
    let stream = tts
        .synthesize(text(&["Hello there.", "  ", "How are you?"]))
        .await
        .unwrap();
    let (samples, error) = collect(stream).await;
    assert_eq!(error, None);
    assert_eq!(samples, [floats(&a), floats(&b)].concat());
    server.ended.recv().await.unwrap();

    let [c] = &server.connections()[..] else {
        panic!("one connection: {:?}", server.connections())
    };
    assert_eq!(
        c.target,
        format!("/v1/text-to-speech/{VOICE}/stream-input?model_id=eleven_turbo_v2_5&output_format=pcm_16000&language_code=en")
    );
    assert_eq!(c.headers["xi-api-key"], KEY);
    assert!(!c.headers.contains_key("authorization"));
    assert_eq!(
        c.messages(),
        [
            json!({"text": " ",
                   "voice_settings": {"stability": 0.4, "similarity_boost": 0.75, "speed": 1.1},
                   "generation_config": {"chunk_length_schedule": [50, 120]}}),
            json!({"text": "Hello there. ", "flush": true}),
            json!({"text": "How are you? ", "flush": true}),
            json!({"text": ""}),
        ],
        "the blank segment is not sent; the key is not in any message"
    );
    assert!(c.client_closed, "hark closes the socket with a close frame");
}

#[tokio::test]
async fn audio_streams_while_the_text_is_still_coming_and_the_end_follows_the_last_sentence() {
    logs();
    let (a, b) = (pattern(240, 3), pattern(240, 4));
    let server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
        Step::Recv,
        Step::Send(audio(&bytes_of(&b))),
        Step::Recv,
        Step::Send(final_message()),
    ]])
    .await;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = provider(&server).synthesize(rx).await.unwrap();
    tx.send("One.".into()).await.unwrap();
    // The first sentence's audio arrives before the second sentence exists.
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    tx.send("Two.".into()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&b));
    assert_eq!(
        server.connections()[0].messages().last().unwrap(),
        &json!({"text": "Two. ", "flush": true}),
        "no end of input while the text channel is open"
    );
    drop(tx);
    assert!(
        stream.recv().await.is_none(),
        "the final message ends the stream"
    );
    assert_eq!(
        server.connections()[0].messages().last().unwrap(),
        &json!({"text": ""})
    );
}

#[tokio::test]
async fn samples_split_across_messages_at_odd_byte_counts_are_reassembled() {
    logs();
    let a = pattern(1000, 5);
    let bytes = bytes_of(&a);
    // Pieces of odd length: every message but the last ends in half a sample; one piece
    // arrives without base64 padding.
    let mut steps = vec![Step::Recv, Step::Recv, Step::RecvEnd];
    let mut at = 0;
    for (i, len) in [1usize, 3, 5, 7, 250, 1, 999].iter().cycle().enumerate() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + len).min(bytes.len());
        let piece = &bytes[at..end];
        let message = if i == 2 {
            json!({"audio": base64::engine::general_purpose::STANDARD_NO_PAD.encode(piece)})
                .to_string()
        } else {
            audio(piece)
        };
        steps.push(Step::Send(message));
        at = end;
    }
    steps.push(Step::Send(final_message()));
    let server = StreamInputTestServer::start(vec![steps]).await;
    let stream = provider(&server)
        .synthesize(text(&["A longer sentence."]))
        .await
        .unwrap();
    let (samples, error) = collect(stream).await;
    assert_eq!(error, None);
    assert_eq!(samples, floats(&a));
}

#[tokio::test]
async fn a_refused_key_is_auth() {
    logs();
    let server = StreamInputTestServer::start(vec![vec![Step::Refuse {
        status: 401,
        headers: vec![],
        body: json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
            .to_string(),
    }]])
    .await;
    let e = provider(&server)
        .synthesize(text(&["Hi."]))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Auth);
}

#[tokio::test]
async fn rate_limited_carries_retry_after_and_server_errors_are_unavailable() {
    logs();
    let server = StreamInputTestServer::start(vec![
        vec![Step::Refuse {
            status: 429,
            headers: vec![("retry-after", "3".into())],
            body: json!({"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests."}}).to_string(),
        }],
        vec![Step::Refuse {
            status: 500,
            headers: vec![],
            body: json!({"error": "internal"}).to_string(),
        }],
    ])
    .await;
    let tts = provider(&server);
    assert_eq!(
        tts.synthesize(text(&["Hi."])).await.unwrap_err(),
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert_eq!(
        tts.synthesize(text(&["Hi."])).await.unwrap_err(),
        ProviderError::Unavailable("HTTP 500: internal".into())
    );
}

#[tokio::test]
async fn an_error_message_from_the_service_ends_the_stream_after_the_audio_before_it() {
    logs();
    let a = pattern(100, 6);
    let server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
        Step::Send(
            json!({"message": "This request exceeds your quota. You have 3 credits remaining, while 12 credits are required for this request.",
                   "error": "quota_exceeded", "code": 1008})
            .to_string(),
        ),
        Step::Close(1008, "quota_exceeded"),
    ]])
    .await;
    let stream = provider(&server)
        .synthesize(text(&["Hello."]))
        .await
        .unwrap();
    let (samples, error) = collect(stream).await;
    assert_eq!(samples, floats(&a));
    assert_eq!(
        error,
        Some(ProviderError::Unavailable(
            "the service reported an error: quota_exceeded: This request exceeds your quota. You have 3 credits remaining, while 12 credits are required for this request.".into()
        ))
    );
}

#[tokio::test]
async fn a_close_frame_without_a_message_is_mapped_by_its_code() {
    logs();
    let server = StreamInputTestServer::start(vec![
        vec![Step::Recv, Step::Close(1008, "Invalid API key")],
        vec![Step::Recv, Step::Close(1011, "internal error")],
    ])
    .await;
    let tts = provider(&server);
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(e, Some(ProviderError::Auth));
    let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(
        e,
        Some(ProviderError::Unavailable(
            "closed by the service (1011): internal error".into()
        ))
    );
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    logs();
    let server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send("{\"audio\": \"AAAA\"".into()),
        Step::Hold,
    ]])
    .await;
    let (samples, e) = collect(provider(&server).synthesize(text(&["Hi."])).await.unwrap()).await;
    assert!(samples.is_empty());
    assert!(
        matches!(&e, Some(ProviderError::Protocol(m)) if m.starts_with("malformed message")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_unavailable_after_the_audio_delivered() {
    logs();
    let a = pattern(64, 7);
    let server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
        Step::Cut,
    ]])
    .await;
    let (samples, e) = collect(provider(&server).synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(samples, floats(&a));
    assert!(matches!(e, Some(ProviderError::Unavailable(_))), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stall_after_the_text_ends_times_out() {
    logs();
    let a = pattern(64, 8);
    let server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
        Step::RecvEnd,
        Step::Hold,
    ]])
    .await;
    let tts = ElevenLabsTts::new(ElevenLabsConfig {
        idle_timeout: Duration::from_secs(3),
        first_byte_timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let mut stream = tts.synthesize(text(&["Hi."])).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    let since = Instant::now();
    assert_eq!(stream.recv().await.unwrap(), Err(ProviderError::Timeout));
    // With the text complete, each message must follow the last within the idle timeout.
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(3100),
        "{waited:?}"
    );
    assert!(stream.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn no_audio_for_a_sentence_times_out_at_the_first_byte_deadline() {
    logs();
    let server = StreamInputTestServer::start(vec![vec![Step::Recv, Step::Recv, Step::Hold]]).await;
    let tts = ElevenLabsTts::new(ElevenLabsConfig {
        first_byte_timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let mut stream = tts.synthesize(rx).await.unwrap();
    tx.send("Hello?".into()).await.unwrap();
    let since = Instant::now();
    assert_eq!(stream.recv().await.unwrap(), Err(ProviderError::Timeout));
    assert!(since.elapsed() >= Duration::from_secs(4));
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_text_is_not_a_stall_and_keeps_the_socket_open() {
    logs();
    let a = pattern(64, 9);
    let server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
        Step::RecvEnd,
        Step::Send(audio(&bytes_of(&a))),
        Step::Send(final_message()),
    ]])
    .await;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = provider(&server).synthesize(rx).await.unwrap();
    tx.send("Let me check.".into()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    // A slow tool call: 40 s without text, far past every timeout.
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(40)).await;
    tx.send("Found it.".into()).await.unwrap();
    drop(tx);
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    let end = stream.recv().await;
    assert!(end.is_none(), "{end:?}");
    let c = &server.connections()[0];
    let keep_alives: Vec<Duration> = c
        .messages
        .iter()
        .filter(|(m, _)| *m == json!({"text": " "}))
        .map(|(_, at)| *at - start)
        .collect();
    // The first message is a space too; the keep-alives come every 15 s of silence.
    assert_eq!(keep_alives.len(), 3, "{keep_alives:?}");
    assert!(
        keep_alives[1] >= Duration::from_secs(15) && keep_alives[2] >= Duration::from_secs(30),
        "{keep_alives:?}"
    );
}

#[tokio::test]
async fn dropping_the_stream_closes_the_socket() {
    logs();
    let a = pattern(64, 10);
    let mut server = StreamInputTestServer::start(vec![vec![
        Step::Recv,
        Step::Recv,
        Step::Send(audio(&bytes_of(&a))),
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
    assert!(
        c.client_closed,
        "a close frame, not just a dropped connection"
    );
    assert!(
        !c.messages().contains(&json!({"text": ""})),
        "a cancelled reply is not finished: {:?}",
        c.messages()
    );
    drop(tx);
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = logs();

    // Every way a service can echo the key back: a refused upgrade, an error message, a close
    // frame's reason.
    let server = StreamInputTestServer::start(vec![
        vec![Step::Refuse {
            status: 400,
            headers: vec![],
            body: json!({"error": {"message": format!("bad key {KEY}")}}).to_string(),
        }],
        vec![
            Step::Recv,
            Step::Recv,
            Step::Send(
                json!({"message": format!("key {KEY} is blocked"), "error": "detected_unusual_activity", "code": 1008})
                    .to_string(),
            ),
            Step::Hold,
        ],
        vec![Step::Recv, Step::Close(4000, KEY)],
    ])
    .await;
    let cfg = config(&server);
    let tts = ElevenLabsTts::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{tts:?}")];
    let e = tts.synthesize(text(&["Hi."])).await.unwrap_err();
    shown.push(format!("{e} {e:?}"));
    for _ in 0..2 {
        let (_, e) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
        let e = e.expect("an error");
        shown.push(format!("{e} {e:?}"));
    }
    assert!(
        shown.iter().any(|s| s.contains("HTTP 400: bad key ***")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|s| s.contains("key *** is blocked")),
        "{shown:?}"
    );
    assert!(shown.iter().any(|s| s.contains("(4000): ***")), "{shown:?}");
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
