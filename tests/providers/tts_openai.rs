//! The OpenAI `audio/speech` provider against a protocol test server: a small HTTP/1.1 server
//! on a local socket, written here, that answers as the API documents (`POST /v1/audio/speech`
//! with a JSON body; raw PCM16 in a chunked body for `response_format: "pcm"`; the
//! `{"error": {...}}` bodies with their statuses and `Retry-After`).
//!
//! What hark sends is checked as strictly as what it does with the replies. Tests that wait
//! (retries, stalls) run on a paused tokio clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::logs::logs;
use hark::providers::http::{ApiKey, RetryPolicy};
use hark::providers::tts::{OpenAiTts, OpenAiTtsConfig};
use hark::providers::{AudioStream, ProviderError, Tts};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

const KEY: &str = "sk-test-0123456789abcdef";

/// One step of the server's answer to a request.
#[derive(Clone)]
pub(crate) enum Step {
    /// Status line, headers and a `Content-Length` body, then close: an error reply.
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// `200` with this content type and chunked encoding; the body follows in `Send`s.
    Start(&'static str),
    /// One chunk of the chunked body.
    Send(Vec<u8>),
    /// Wait until the test says go on.
    Wait(Arc<Notify>),
    /// The terminating zero-length chunk, then close.
    End,
    /// Close the socket now (a cut connection).
    Cut,
    /// Send nothing more; note when the client closes the connection.
    Hold,
}

/// What the server saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A request for this input arrived.
    Request(String),
    /// The answer to this input's request ended (`End`).
    Ended(String),
    /// The client closed this input's connection while it was held.
    Gone(String),
}

/// A request as the server read it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names lowercased.
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Value,
    at: Instant,
}

/// The protocol test server. A request is answered by the scripts for its `input`, the n-th
/// request for an input by the n-th script (the last one repeats); other inputs get `default`.
pub(crate) struct SpeechTestServer {
    pub(crate) base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl SpeechTestServer {
    pub(crate) async fn start(scripts: Vec<(&str, Vec<Vec<Step>>)>, default: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let log = received.clone();
        let mut scripts: HashMap<String, (usize, Vec<Vec<Step>>)> = scripts
            .into_iter()
            .map(|(k, v)| (k.to_owned(), (0, v)))
            .collect();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                socket.set_nodelay(true).unwrap();
                let Some(request) = read_request(&mut socket).await else {
                    continue;
                };
                let input = request.body["input"].as_str().unwrap_or("").to_owned();
                log.lock().unwrap().push(request);
                let _ = events_tx.send(Event::Request(input.clone()));
                let script = match scripts.get_mut(&input) {
                    Some((n, list)) => {
                        let s = list[(*n).min(list.len() - 1)].clone();
                        *n += 1;
                        s
                    }
                    None => default.clone(),
                };
                tokio::spawn(serve(socket, script, input, events_tx.clone()));
            }
        });
        SpeechTestServer {
            base_url,
            received,
            events,
        }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("no event from the server")
            .unwrap()
    }
}

async fn serve(
    mut socket: TcpStream,
    script: Vec<Step>,
    input: String,
    events: mpsc::UnboundedSender<Event>,
) {
    for step in script {
        match step {
            Step::Reply {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                return;
            }
            Step::Start(content_type) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
            }
            Step::Send(data) => {
                let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Step::Wait(go) => go.notified().await,
            Step::End => {
                let _ = socket.write_all(b"0\r\n\r\n").await;
                let _ = events.send(Event::Ended(input));
                return;
            }
            Step::Cut => return,
            Step::Hold => {
                let mut buf = [0u8; 64];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = events.send(Event::Gone(input));
                return;
            }
        }
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
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
    Some(Received {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap(),
        at: Instant::now(),
    })
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

/// The body of `samples` in chunks of odd sizes, so samples are split between chunks.
fn odd_chunks(samples: &[i16]) -> Vec<Step> {
    let bytes = bytes_of(samples);
    let mut steps = vec![Step::Start("application/octet-stream")];
    let mut at = 0;
    for len in [1usize, 3, 999, 5, 7].iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + len).min(bytes.len());
        steps.push(Step::Send(bytes[at..end].to_vec()));
        at = end;
    }
    steps.push(Step::End);
    steps
}

/// A whole answer: the audio in one chunk.
fn speech(samples: &[i16]) -> Vec<Step> {
    vec![
        Step::Start("application/octet-stream"),
        Step::Send(bytes_of(samples)),
        Step::End,
    ]
}

fn openai_error(message: &str, kind: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
}

fn config(server: &SpeechTestServer) -> OpenAiTtsConfig {
    OpenAiTtsConfig {
        base_url: server.base_url.clone(),
        api_key: Some(ApiKey::new(KEY)),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..OpenAiTtsConfig::new()
    }
}

fn provider(server: &SpeechTestServer) -> OpenAiTts {
    OpenAiTts::new(config(server)).unwrap()
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
async fn sends_each_sentence_as_audio_speech_specifies_and_decodes_split_samples() {
    logs();
    let (a, b) = (pattern(2400, 1), pattern(777, 2));
    let server = SpeechTestServer::start(
        vec![
            ("Hello there.", vec![odd_chunks(&a)]),
            ("How are you?", vec![speech(&b)]),
        ],
        vec![],
    )
    .await;
    let tts = OpenAiTts::new(OpenAiTtsConfig {
        model: "tts-1".into(),
        voice: "coral".into(),
        speed: Some(1.25),
        instructions: Some("Speak warmly.".into()),
        ..config(&server)
    })
    .unwrap();
    assert_eq!((tts.label(), tts.sample_rate()), ("openai", 24_000));
    let (samples, error) = collect(
        tts.synthesize(text(&[" Hello there. ", "", "How are you?"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error, None);
    assert_eq!(samples, [floats(&a), floats(&b)].concat());

    let r = server.received();
    assert_eq!(
        r.len(),
        2,
        "one request per sentence, none for the blank one"
    );
    for (req, input) in r.iter().zip(["Hello there.", "How are you?"]) {
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/audio/speech")
        );
        assert_eq!(req.headers["authorization"], format!("Bearer {KEY}"));
        assert_eq!(req.headers["content-type"], "application/json");
        assert!(req.headers["user-agent"].starts_with("hark/"));
        assert_eq!(
            req.body,
            json!({"model": "tts-1", "voice": "coral", "input": input, "response_format": "pcm",
                   "speed": 1.25, "instructions": "Speak warmly."})
        );
    }
}

#[tokio::test]
async fn a_lan_server_gets_no_key_and_its_own_rate() {
    logs();
    let a = pattern(100, 3);
    let server = SpeechTestServer::start(vec![], speech(&a)).await;
    let tts = OpenAiTts::new(OpenAiTtsConfig {
        api_key: Some(ApiKey::new(" ")),
        sample_rate: 22_050,
        model: "kokoro".into(),
        voice: "af_heart".into(),
        ..config(&server)
    })
    .unwrap();
    assert_eq!(tts.sample_rate(), 22_050);
    let (samples, error) = collect(tts.synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!((samples, error), (floats(&a), None));
    let r = &server.received()[0];
    assert!(!r.headers.contains_key("authorization"), "{r:?}");
    assert_eq!(
        r.body,
        json!({"model": "kokoro", "voice": "af_heart", "input": "Hi.", "response_format": "pcm"})
    );
}

#[tokio::test]
async fn the_next_sentence_is_requested_while_the_current_one_plays_and_audio_stays_in_order() {
    logs();
    let go = Arc::new(Notify::new());
    let (a1, a2, b, c) = (
        pattern(300, 4),
        pattern(300, 5),
        pattern(300, 6),
        pattern(300, 7),
    );
    let mut server = SpeechTestServer::start(
        vec![
            (
                "One.",
                vec![vec![
                    Step::Start("audio/pcm"),
                    Step::Send(bytes_of(&a1)),
                    Step::Wait(go.clone()),
                    Step::Send(bytes_of(&a2)),
                    Step::End,
                ]],
            ),
            ("Two.", vec![speech(&b)]),
            ("Three.", vec![speech(&c)]),
        ],
        vec![],
    )
    .await;
    let stream = provider(&server)
        .synthesize(text(&["One.", "Two.", "Three."]))
        .await
        .unwrap();
    // "Two." is requested (and fully answered) while "One." is still streaming (the two
    // requests may reach the server in either order)...
    let mut first = vec![
        server.event().await,
        server.event().await,
        server.event().await,
    ];
    first.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        first,
        [
            Event::Ended("Two.".into()),
            Event::Request("One.".into()),
            Event::Request("Two.".into()),
        ]
    );
    // ...but "Three." waits for a free slot: two requests at most.
    go.notify_one();
    assert_eq!(server.event().await, Event::Ended("One.".into()));
    assert_eq!(server.event().await, Event::Request("Three.".into()));
    assert_eq!(server.event().await, Event::Ended("Three.".into()));
    let (samples, error) = collect(stream).await;
    assert_eq!(error, None);
    assert_eq!(
        samples,
        [floats(&a1), floats(&a2), floats(&b), floats(&c)].concat(),
        "delivered in the order of the text"
    );
}

#[tokio::test]
async fn a_refused_key_is_auth_and_is_not_retried() {
    logs();
    let server = SpeechTestServer::start(
        vec![],
        vec![Step::Reply {
            status: 401,
            headers: vec![],
            body: openai_error(
                "Incorrect API key provided: sk-test-01**********cdef.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        }],
    )
    .await;
    let (samples, e) = collect(provider(&server).synthesize(text(&["Hi."])).await.unwrap()).await;
    assert!(samples.is_empty());
    assert_eq!(e, Some(ProviderError::Auth));
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_is_retried_after_retry_after_with_the_same_body() {
    logs();
    let a = pattern(100, 8);
    let server = SpeechTestServer::start(
        vec![(
            "Hi.",
            vec![
                vec![Step::Reply {
                    status: 429,
                    headers: vec![("retry-after", "1".into())],
                    body: openai_error(
                        "Rate limit reached for tts-1 on requests per min (RPM): Limit 3, Used 3, Requested 1.",
                        "requests",
                        "rate_limit_exceeded",
                    ),
                }],
                speech(&a),
            ],
        )],
        vec![],
    )
    .await;
    let (samples, e) = collect(provider(&server).synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!((samples, e), (floats(&a), None));
    let r = server.received();
    assert_eq!(r.len(), 2);
    let waited = r[1].at - r[0].at;
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
        "{waited:?}"
    );
    assert_eq!(r[0].body, r[1].body);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_backoff_then_unavailable() {
    logs();
    let server = SpeechTestServer::start(
        vec![],
        vec![Step::Reply {
            status: 500,
            headers: vec![],
            body: openai_error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                "",
            ),
        }],
    )
    .await;
    let (_, e) = collect(provider(&server).synthesize(text(&["Hi."])).await.unwrap()).await;
    assert_eq!(
        e,
        Some(ProviderError::Unavailable(
            "HTTP 500: The server had an error while processing your request. Sorry about that!"
                .into()
        ))
    );
    assert_eq!(server.received().len(), 3, "three attempts");
}

#[tokio::test(start_paused = true)]
async fn a_cut_before_any_audio_is_retried_but_a_cut_after_audio_is_an_error() {
    logs();
    let (a, b) = (pattern(100, 9), pattern(100, 10));
    let server = SpeechTestServer::start(
        vec![
            (
                "First.",
                vec![vec![Step::Start("audio/pcm"), Step::Cut], speech(&a)],
            ),
            (
                "Second.",
                vec![vec![
                    Step::Start("audio/pcm"),
                    Step::Send(bytes_of(&b)),
                    Step::Cut,
                ]],
            ),
        ],
        vec![],
    )
    .await;
    let (samples, e) = collect(
        provider(&server)
            .synthesize(text(&["First.", "Second."]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(samples, [floats(&a), floats(&b)].concat());
    assert!(matches!(e, Some(ProviderError::Unavailable(_))), "{e:?}");
    let inputs: Vec<_> = server
        .received()
        .iter()
        .map(|r| r.body["input"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(inputs, ["First.", "Second.", "First."]);
}

#[tokio::test]
async fn a_json_or_mp3_answer_is_a_protocol_error() {
    logs();
    for content_type in ["application/json", "audio/mpeg"] {
        let server = SpeechTestServer::start(
            vec![],
            vec![
                Step::Start(content_type),
                Step::Send(b"{}".to_vec()),
                Step::End,
            ],
        )
        .await;
        let (_, e) = collect(provider(&server).synthesize(text(&["Hi."])).await.unwrap()).await;
        assert!(
            matches!(&e, Some(ProviderError::Protocol(m)) if m.contains(content_type)),
            "{e:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_times_out_and_no_answer_times_out_at_the_first_byte() {
    logs();
    let a = pattern(100, 11);
    let server = SpeechTestServer::start(
        vec![
            (
                "Stall.",
                vec![vec![
                    Step::Start("audio/pcm"),
                    Step::Send(bytes_of(&a)),
                    Step::Hold,
                ]],
            ),
            ("Silent.", vec![vec![Step::Hold]]),
        ],
        vec![],
    )
    .await;
    let tts = OpenAiTts::new(OpenAiTtsConfig {
        idle_timeout: Duration::from_secs(3),
        first_byte_timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let mut stream = tts.synthesize(text(&["Stall."])).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    let since = Instant::now();
    assert_eq!(stream.recv().await.unwrap(), Err(ProviderError::Timeout));
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(3100),
        "{waited:?}"
    );

    let start = Instant::now();
    let (_, e) = collect(tts.synthesize(text(&["Silent."])).await.unwrap()).await;
    assert_eq!(e, Some(ProviderError::Timeout));
    assert!(start.elapsed() >= Duration::from_secs(4));
    assert_eq!(server.received().len(), 2, "a timeout is not retried");
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    logs();
    let a = pattern(100, 12);
    let mut server = SpeechTestServer::start(
        vec![],
        vec![
            Step::Start("audio/pcm"),
            Step::Send(bytes_of(&a)),
            Step::Hold,
        ],
    )
    .await;
    let tts = OpenAiTts::new(OpenAiTtsConfig {
        idle_timeout: Duration::from_secs(600),
        ..config(&server)
    })
    .unwrap();
    let mut stream = tts.synthesize(text(&["A long story."])).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), floats(&a));
    drop(stream);
    assert_eq!(server.event().await, Event::Request("A long story.".into()));
    assert_eq!(server.event().await, Event::Gone("A long story.".into()));
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = logs();

    let echo = |status| Step::Reply {
        status,
        headers: vec![],
        body: openai_error(&format!("Incorrect API key provided: {KEY}"), "x", "y"),
    };
    let server = SpeechTestServer::start(
        vec![
            ("a.", vec![vec![echo(401)]]),
            ("b.", vec![vec![echo(400)]]),
            ("c.", vec![vec![echo(500)]]),
        ],
        vec![],
    )
    .await;
    let cfg = OpenAiTtsConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        ..config(&server)
    };
    let tts = OpenAiTts::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{tts:?}")];
    for input in ["a.", "b.", "c."] {
        let (_, e) = collect(tts.synthesize(text(&[input])).await.unwrap()).await;
        let e = e.expect("an error");
        shown.push(format!("{e} {e:?}"));
    }
    assert!(
        shown
            .iter()
            .any(|s| s.contains("HTTP 400: Incorrect API key provided: ***")),
        "{shown:?}"
    );
    // All tests' lines so far: none may hold the key.
    let logs = logs.text();
    assert!(
        logs.contains("retrying"),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}
