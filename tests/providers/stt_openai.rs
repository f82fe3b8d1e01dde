//! OpenAI audio transcriptions against a transcription-protocol test server: a small HTTP/1.1
//! server on a local socket, written here, that reads `POST /v1/audio/transcriptions` as
//! OpenAI's API documents it (`multipart/form-data` with `file`, `model`, `response_format`,
//! `language`, `prompt`), takes the WAV file apart, and answers `{"text": …}` or the
//! `{"error": {...}}` bodies with their statuses and `Retry-After`.
//!
//! What hark sends is checked as strictly as what it does with the answers. Tests that wait
//! (retries, timeouts) run on a paused tokio clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::logs::Captured;
use hark::providers::http::{ApiKey, RetryPolicy};
use hark::providers::stt::{OpenAiStt, OpenAiSttConfig};
use hark::providers::{ProviderError, Stt, SttEvent, SttSession};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const KEY: &str = "sk-test-0123456789abcdef";

/// The server's answer to one request.
#[derive(Clone)]
enum Answer {
    /// Status, headers and a JSON body.
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answer; report when the client closes the connection.
    Hold,
}

fn ok(text: &str) -> Answer {
    Answer::Reply {
        status: 200,
        headers: vec![],
        body: json!({"text": text, "usage": {"type": "duration", "seconds": 2}}).to_string(),
    }
}

fn openai_error(status: u16, message: &str, kind: &str, code: &str) -> Answer {
    Answer::Reply {
        status,
        headers: vec![],
        body: json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string(),
    }
}

/// One part of a multipart body.
#[derive(Debug, Clone)]
struct Part {
    /// Header names lowercased.
    headers: BTreeMap<String, String>,
    data: Vec<u8>,
}

/// A request as the server read it, its form taken apart.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    /// Parts by their `name`.
    parts: BTreeMap<String, Part>,
    /// Part names in order.
    order: Vec<String>,
    raw_body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn field(&self, name: &str) -> Option<String> {
        self.parts
            .get(name)
            .map(|p| String::from_utf8(p.data.clone()).unwrap())
    }

    /// The uploaded WAV: its header and samples.
    fn wav(&self) -> (hound::WavSpec, Vec<i16>) {
        let data = &self.parts["file"].data;
        let reader = hound::WavReader::new(std::io::Cursor::new(data.clone())).unwrap();
        let spec = reader.spec();
        let samples = reader
            .into_samples::<i16>()
            .collect::<Result<_, _>>()
            .unwrap();
        (spec, samples)
    }
}

/// The protocol test server: the n-th request gets the n-th answer (the last one repeats).
struct TranscriptionsTestServer {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    disconnects: mpsc::UnboundedReceiver<()>,
}

impl TranscriptionsTestServer {
    async fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (disconnect_tx, disconnects) = mpsc::unbounded_channel();
        let log = received.clone();
        tokio::spawn(async move {
            let n = Arc::new(Mutex::new(0usize));
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                socket.set_nodelay(true).unwrap();
                let (log, d, n, answers) = (
                    log.clone(),
                    disconnect_tx.clone(),
                    n.clone(),
                    answers.clone(),
                );
                tokio::spawn(serve(socket, answers, n, log, d));
            }
        });
        TranscriptionsTestServer {
            base_url,
            received,
            disconnects,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Serves requests on one (keep-alive) connection.
async fn serve(
    mut socket: TcpStream,
    answers: Vec<Answer>,
    n: Arc<Mutex<usize>>,
    log: Arc<Mutex<Vec<Received>>>,
    disconnected: mpsc::UnboundedSender<()>,
) {
    while let Some(request) = read_request(&mut socket).await {
        log.lock().unwrap().push(request);
        let answer = {
            let mut n = n.lock().unwrap();
            let a = answers[(*n).min(answers.len() - 1)].clone();
            *n += 1;
            a
        };
        match answer {
            Answer::Reply {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                // One write: on a kept-alive connection, a second small write would wait for
                // the client's delayed ACK (Nagle), real time a paused clock does not wait for.
                head.push_str(&body);
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
            }
            Answer::Hold => {
                let mut buf = [0u8; 64];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = disconnected.send(());
                return;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let (method, path) = (
        first.next().unwrap().to_owned(),
        first.next().unwrap().to_owned(),
    );
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let boundary = headers["content-type"]
        .strip_prefix("multipart/form-data; boundary=")
        .expect("a multipart body")
        .to_owned();
    let (parts, order) = parse_multipart(&body, &boundary);
    Some(Received {
        method,
        path,
        headers,
        parts,
        order,
        raw_body: body,
        at: Instant::now(),
    })
}

/// Splits a `multipart/form-data` body (RFC 7578) into its named parts, strictly: every
/// delimiter line, the closing one, and each part's `Content-Disposition`.
fn parse_multipart(body: &[u8], boundary: &str) -> (BTreeMap<String, Part>, Vec<String>) {
    let delimiter = format!("--{boundary}");
    let close = format!("--{boundary}--\r\n");
    assert!(
        body.ends_with(close.as_bytes()),
        "the body ends with the close delimiter"
    );
    assert!(body.starts_with(format!("{delimiter}\r\n").as_bytes()));
    let find = |from: usize| {
        body[from..]
            .windows(delimiter.len() + 2)
            .position(|w| w == format!("\r\n{delimiter}").as_bytes())
            .map(|i| i + from)
    };
    let mut parts = BTreeMap::new();
    let mut order = Vec::new();
    let mut at = delimiter.len() + 2;
    while let Some(end) = find(at) {
        let part = &body[at..end];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let headers: BTreeMap<String, String> = String::from_utf8(part[..split].to_vec())
            .unwrap()
            .split("\r\n")
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let disposition = &headers["content-disposition"];
        assert!(
            disposition.starts_with("form-data; name=\""),
            "{disposition}"
        );
        let name = disposition["form-data; name=\"".len()..]
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        order.push(name.clone());
        parts.insert(
            name,
            Part {
                headers,
                data: part[split + 4..].to_vec(),
            },
        );
        at = end + 2 + delimiter.len() + 2;
        if body[end + 2 + delimiter.len()..].starts_with(b"--") {
            break;
        }
    }
    (parts, order)
}

fn config(server: &TranscriptionsTestServer) -> OpenAiSttConfig {
    OpenAiSttConfig {
        base_url: server.base_url.clone(),
        api_key: Some(ApiKey::new(KEY)),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..OpenAiSttConfig::new()
    }
}

fn provider(server: &TranscriptionsTestServer) -> OpenAiStt {
    OpenAiStt::new(config(server)).unwrap()
}

fn tone(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.3 * (i as f32 * 220.0 * std::f32::consts::TAU / 16_000.0).sin())
        .collect()
}

fn final_(text: &str) -> SttEvent {
    SttEvent::Final {
        text: text.into(),
        confidence: None,
    }
}

async fn collect(session: &mut SttSession) -> Vec<SttEvent> {
    let mut out = Vec::new();
    while let Some(e) = session.events.recv().await {
        out.push(e);
    }
    out
}

/// Pushes `audio` in 20 ms pieces, as the session does.
fn push(session: &mut SttSession, audio: &[f32]) {
    for piece in audio.chunks(320) {
        session.input.push_audio(piece);
    }
}

#[tokio::test]
async fn each_utterance_is_one_multipart_request_with_a_16_khz_mono_wav() {
    let server =
        TranscriptionsTestServer::start(vec![ok(" Book a room. "), ok("For two nights.")]).await;
    let stt = OpenAiStt::new(OpenAiSttConfig {
        language: Some("en".into()),
        prompt: Some("Grand Hotel, Ms. Okonkwo".into()),
        ..config(&server)
    })
    .unwrap();
    assert_eq!((stt.label(), stt.sample_rate()), ("openai", 16_000));
    let mut session = stt.connect().await.unwrap();
    let speech = tone(16_000);
    push(&mut session, &speech);
    session.input.flush();
    assert_eq!(session.events.recv().await.unwrap(), final_("Book a room."));
    // The second utterance starts after 2 s of silence: 0.3 s of it is kept.
    push(&mut session, &vec![0.0; 32_000]);
    push(&mut session, &tone(8_000));
    session.input.flush();
    assert_eq!(
        session.events.recv().await.unwrap(),
        final_("For two nights.")
    );

    let r = server.received();
    assert_eq!(r.len(), 2);
    let req = &r[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/audio/transcriptions")
    );
    assert_eq!(req.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(req.headers["accept"], "application/json");
    assert!(req.headers["user-agent"].starts_with("hark/"));
    assert_eq!(
        req.headers["content-length"],
        req.raw_body.len().to_string()
    );
    assert_eq!(
        req.order,
        ["model", "response_format", "language", "prompt", "file"]
    );
    assert_eq!(req.field("model").as_deref(), Some("whisper-1"));
    assert_eq!(req.field("response_format").as_deref(), Some("json"));
    assert_eq!(req.field("language").as_deref(), Some("en"));
    assert_eq!(
        req.field("prompt").as_deref(),
        Some("Grand Hotel, Ms. Okonkwo")
    );
    let file = &req.parts["file"];
    assert_eq!(
        file.headers["content-disposition"],
        "form-data; name=\"file\"; filename=\"speech.wav\""
    );
    assert_eq!(file.headers["content-type"], "audio/wav");
    let (spec, samples) = req.wav();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (16_000, 1, 16)
    );
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    assert_eq!(samples.len(), 16_000, "one second, as pushed");
    let mut expected = Vec::new();
    hark::audio::pcm::encode_pcm16(&speech, &mut expected);
    let expected: Vec<i16> = expected
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(samples, expected, "the samples themselves");

    let (_, second) = r[1].wav();
    assert_eq!(second.len(), 4_800 + 8_000, "0.3 s lead-in and the speech");
}

#[tokio::test]
async fn silence_and_very_short_sounds_are_not_sent() {
    let server = TranscriptionsTestServer::start(vec![ok("Yes.")]).await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &vec![0.0; 16_000]);
    session.input.flush();
    push(&mut session, &tone(800)); // 50 ms
    session.input.flush();
    session.input.flush(); // nothing since the last flush
    push(&mut session, &tone(4_000)); // 250 ms
    session.input.flush();
    assert_eq!(session.events.recv().await.unwrap(), final_("Yes."));
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.received()[0].wav().1.len(), 4_000);
}

#[tokio::test]
async fn an_lan_server_without_a_key_gets_no_authorization_and_an_empty_text_is_no_event() {
    let server = TranscriptionsTestServer::start(vec![ok("   "), ok("Hello.")]).await;
    let stt = OpenAiStt::new(OpenAiSttConfig {
        api_key: None,
        model: "Systran/faster-whisper-small".into(),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    push(&mut session, &tone(8_000));
    session.input.flush();
    assert_eq!(session.events.recv().await.unwrap(), final_("Hello."));
    let r = server.received();
    assert!(!r[0].headers.contains_key("authorization"));
    assert_eq!(
        r[0].field("model").as_deref(),
        Some("Systran/faster-whisper-small")
    );
    assert_eq!(r[0].order, ["model", "response_format", "file"]);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_is_retried_after_retry_after_with_the_same_body() {
    let server = TranscriptionsTestServer::start(vec![
        Answer::Reply {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: json!({"error": {"message": "Rate limit reached for whisper-1 on requests per min (RPM): Limit 3, Used 3, Requested 1.",
                                   "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
            .to_string(),
        },
        ok("Hi."),
    ])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    assert_eq!(session.events.recv().await.unwrap(), final_("Hi."));
    let r = server.received();
    assert_eq!(r.len(), 2);
    let waited = r[1].at - r[0].at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    assert_eq!(
        r[0].raw_body, r[1].raw_body,
        "the same request is sent again"
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_backoff() {
    let down = openai_error(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        "",
    );
    let server = TranscriptionsTestServer::start(vec![down.clone(), down, ok("Made it.")]).await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    assert_eq!(session.events.recv().await.unwrap(), final_("Made it."));
    let r = server.received();
    assert_eq!(r.len(), 3);
    let (w1, w2) = (r[1].at - r[0].at, r[2].at - r[1].at);
    assert!(w1 >= Duration::from_millis(50) && w1 <= Duration::from_millis(100));
    assert!(w2 >= Duration::from_millis(100) && w2 <= Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn persistent_server_errors_end_the_stream_with_unavailable() {
    let server = TranscriptionsTestServer::start(vec![openai_error(
        503,
        "Service Unavailable",
        "server_error",
        "",
    )])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Unavailable(
            "HTTP 503: Service Unavailable".into()
        ))]
    );
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn a_refused_key_is_auth_is_not_retried_and_ends_the_stream() {
    let server = TranscriptionsTestServer::start(vec![openai_error(
        401,
        &format!("Incorrect API key provided: {KEY}."),
        "invalid_request_error",
        "invalid_api_key",
    )])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Auth)]
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_malformed_answer_is_a_protocol_error() {
    let server = TranscriptionsTestServer::start(vec![Answer::Reply {
        status: 200,
        headers: vec![],
        body: "{\"text\": ".into(),
    }])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    let events = collect(&mut session).await;
    assert!(
        matches!(&events[..], [SttEvent::Error(ProviderError::Protocol(m))] if m.starts_with("malformed transcription answer")),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_answer_times_out() {
    let server = TranscriptionsTestServer::start(vec![Answer::Hold]).await;
    let stt = OpenAiStt::new(OpenAiSttConfig {
        timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    push(&mut session, &tone(8_000));
    let start = Instant::now();
    session.input.flush();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Timeout)]
    );
    assert!(start.elapsed() >= Duration::from_secs(4));
    assert_eq!(server.received().len(), 1, "a timeout is not retried");
}

#[tokio::test]
async fn dropping_the_session_abandons_the_request_in_flight() {
    let mut server = TranscriptionsTestServer::start(vec![Answer::Hold]).await;
    let stt = OpenAiStt::new(OpenAiSttConfig {
        timeout: Duration::from_secs(600),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    while server.received().is_empty() {
        tokio::task::yield_now().await;
    }
    drop(session);
    tokio::time::timeout(Duration::from_secs(10), server.disconnects.recv())
        .await
        .expect("the server saw no disconnect")
        .unwrap();
}

#[tokio::test]
async fn dropping_the_input_ends_the_stream_without_an_error() {
    let server = TranscriptionsTestServer::start(vec![ok("Last words.")]).await;
    let mut session = provider(&server).connect().await.unwrap();
    push(&mut session, &tone(8_000));
    session.input.flush();
    push(&mut session, &tone(8_000)); // never flushed: not sent
    let SttSession { input, mut events } = session;
    drop(input);
    let mut got = Vec::new();
    while let Some(e) = events.recv().await {
        got.push(e);
    }
    assert_eq!(got, [final_("Last words.")]);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = Captured::default();
    let _guard = logs.install();
    tracing::callsite::rebuild_interest_cache();
    let echo = |status| {
        openai_error(
            status,
            &format!("Incorrect API key provided: {KEY}"),
            "x",
            "y",
        )
    };
    let server = TranscriptionsTestServer::start(vec![echo(400), echo(500)]).await;
    let cfg = OpenAiSttConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        ..config(&server)
    };
    let stt = OpenAiStt::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{stt:?}")];
    for _ in 0..2 {
        let mut session = stt.connect().await.unwrap();
        push(&mut session, &tone(8_000));
        session.input.flush();
        for e in collect(&mut session).await {
            shown.push(format!("{e:?}"));
        }
    }
    assert!(
        shown
            .iter()
            .any(|s| s.contains("HTTP 400: Incorrect API key provided: ***")),
        "{shown:?}"
    );
    let logs = logs.text();
    // Tests running in parallel can race tracing's per-callsite cache, so which lines are
    // captured may vary; that some are is checked, and none may hold the key.
    assert!(
        logs.contains("provider=\"openai\""),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}
