//! AssemblyAI Universal-Streaming v3 against an AssemblyAI-protocol test server
//! (`stt_support`): a local WebSocket server that answers as AssemblyAI's streaming API
//! documents (`Begin`, `Turn` with `end_of_turn`/`turn_is_formatted`/`utterance`,
//! `Termination`, `Error` messages followed by a close with the same code).
//!
//! What hark sends (URL, query, headers, 50 ms PCM16 frames, control messages) is checked as
//! strictly as what it makes of the replies. Tests that wait run on a paused tokio clock.

use crate::stt_support;

use std::time::Duration;

use crate::logs::Captured;
use hark::audio::pcm::encode_pcm16;
use hark::providers::http::{ApiKey, RetryPolicy};
use hark::providers::stt::{AssemblyAiConfig, AssemblyAiStt};
use hark::providers::{ProviderError, Stt, SttEvent, SttSession};
use serde_json::json;
use stt_support::{Frame, Step, WsTestServer};
use tokio::time::Instant;

const KEY: &str = "aai-test-0123456789abcdef";
const FRAME_BYTES: usize = 1600; // 50 ms of PCM16 at 16 kHz

fn config(server: &WsTestServer) -> AssemblyAiConfig {
    AssemblyAiConfig {
        url: server.url("/v3/ws"),
        api_key: Some(ApiKey::new(KEY)),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..AssemblyAiConfig::new()
    }
}

fn provider(server: &WsTestServer) -> AssemblyAiStt {
    AssemblyAiStt::new(config(server)).unwrap()
}

fn begin() -> String {
    json!({"type": "Begin", "id": "de5d9927-73a6-4be8-b52d-b4c07be37e6b", "expires_at": 1759796682})
        .to_string()
}

/// A `Turn` message as AssemblyAI sends it; every word at confidence 0.9.
fn turn(order: u64, transcript: &str, end: bool, formatted: bool, utterance: &str) -> String {
    let words: Vec<_> = transcript
        .split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            json!({"start": 1920 + 400 * i, "end": 2000 + 400 * i, "text": w,
                   "confidence": 0.9, "word_is_final": true})
        })
        .collect();
    json!({"turn_order": order, "turn_is_formatted": formatted, "end_of_turn": end,
           "transcript": transcript, "end_of_turn_confidence": if end { 0.81 } else { 0.02 },
           "words": words, "utterance": utterance, "type": "Turn"})
    .to_string()
}

fn termination() -> String {
    json!({"type": "Termination", "audio_duration_seconds": 2, "session_duration_seconds": 3})
        .to_string()
}

fn error(code: u16, message: &str) -> String {
    json!({"type": "Error", "error_code": code, "error": message}).to_string()
}

fn final_(text: &str) -> SttEvent {
    SttEvent::Final {
        text: text.into(),
        confidence: Some(0.9),
    }
}

fn tone(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.4 * (i as f32 * 300.0 * std::f32::consts::TAU / 16_000.0).sin())
        .collect()
}

async fn collect(session: &mut SttSession) -> Vec<SttEvent> {
    let mut out = Vec::new();
    while let Some(e) = session.events.recv().await {
        out.push(e);
    }
    out
}

// Paused: a server that never answers the close message is given up on after 5 s.
#[tokio::test(start_paused = true)]
async fn connects_with_the_documented_url_query_and_key() {
    let server = WsTestServer::start(vec![vec![Step::Send(begin())]]).await;
    let stt = provider(&server);
    assert_eq!((stt.label(), stt.sample_rate()), ("assemblyai", 16_000));
    let session = stt.connect().await.unwrap();
    let conn = server.conn(0).await;
    assert_eq!(
        conn.handshake.uri,
        "/v3/ws?sample_rate=16000&encoding=pcm_s16le&format_turns=true\
         &speech_model=universal-streaming-english"
    );
    assert_eq!(conn.handshake.headers["authorization"], KEY, "the bare key");
    drop(session);
    conn.wait_eof().await;
}

#[tokio::test]
async fn audio_goes_in_50_ms_frames_and_flush_forces_the_endpoint() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::AwaitText("ForceEndpoint"),
        Step::Send(turn(
            0,
            "hi my name is sonny",
            true,
            false,
            "hi my name is sonny",
        )),
        Step::Send(turn(0, "Hi, my name is Sonny.", true, true, "")),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    // 120 ms: two whole frames and a 20 ms rest, padded to 50 ms (AssemblyAI refuses less).
    let audio = tone(1920);
    for piece in audio.chunks(480) {
        session.input.push_audio(piece);
    }
    session.input.flush();
    assert_eq!(
        session.events.recv().await.unwrap(),
        final_("Hi, my name is Sonny.")
    );
    let conn = server.conn(0).await;
    let frames = conn.binaries();
    assert_eq!(
        frames.iter().map(Vec::len).collect::<Vec<_>>(),
        [FRAME_BYTES; 3]
    );
    let mut expected = Vec::new();
    encode_pcm16(&audio, &mut expected);
    expected.resize(3 * FRAME_BYTES, 0);
    assert_eq!(frames.concat(), expected);
    let last = conn
        .frames()
        .into_iter()
        .rev()
        .find(|(_, f)| !matches!(f, Frame::Ping))
        .unwrap()
        .1;
    assert_eq!(last, Frame::Text(r#"{"type":"ForceEndpoint"}"#.into()));
}

#[tokio::test]
async fn turns_in_progress_are_interim_and_an_ended_turn_is_final_once() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::Send(turn(0, "", false, false, "")),
        Step::Send(turn(0, "book", false, false, "")),
        Step::Send(turn(0, "book a room", false, false, "book a room")),
        Step::Send(turn(0, "book a room", true, false, "book a room")),
        Step::Send(turn(0, "Book a room.", true, true, "")),
        Step::Send(turn(1, "for two", false, false, "")),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(session.events.recv().await.unwrap());
    }
    assert_eq!(
        got,
        [
            SttEvent::Interim("book".into()),
            // A pause: no preflight, as formatting is on (the final would never match it).
            SttEvent::Interim("book a room".into()),
            // The raw end of turn is skipped; its formatted version is the final.
            final_("Book a room."),
            SttEvent::Interim("for two".into()),
        ]
    );
}

#[tokio::test]
async fn unformatted_turns_give_a_preflight_at_the_pause_then_the_same_text_final() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::Send(turn(0, "book a", false, false, "")),
        Step::Send(turn(0, "book a room", false, false, "book a room")),
        Step::Send(turn(0, "book a room", true, false, "book a room")),
    ]])
    .await;
    let stt = AssemblyAiStt::new(AssemblyAiConfig {
        format_turns: false,
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    assert!(server
        .conn(0)
        .await
        .handshake
        .uri
        .contains("format_turns=false"));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(session.events.recv().await.unwrap());
    }
    assert_eq!(
        got,
        [
            SttEvent::Interim("book a".into()),
            SttEvent::Preflight("book a room".into()),
            final_("book a room"),
        ]
    );
}

#[tokio::test]
async fn dropping_the_input_sends_terminate_and_the_last_turn_still_arrives() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::AwaitText("Terminate"),
        Step::Send(turn(0, "Goodbye.", true, true, "")),
        Step::Send(termination()),
        Step::Close(1000, String::new()),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    session.input.push_audio(&tone(1000));
    let SttSession { input, mut events } = session;
    drop(input);
    let mut got = Vec::new();
    while let Some(e) = events.recv().await {
        got.push(e);
    }
    assert_eq!(got, [final_("Goodbye.")], "no error: the end was asked for");
    let conn = server.conn(0).await;
    conn.wait_eof().await;
    assert_eq!(conn.texts(), [r#"{"type":"Terminate"}"#]);
    assert_eq!(
        conn.binaries().iter().map(Vec::len).collect::<Vec<_>>(),
        [FRAME_BYTES; 2],
        "the rest was padded to a whole frame before terminating"
    );
}

#[tokio::test(start_paused = true)]
async fn keepalive_is_sent_after_five_seconds_without_audio() {
    let server = WsTestServer::start(vec![vec![Step::Send(begin())]]).await;
    let _session = provider(&server).connect().await.unwrap();
    let start = Instant::now();
    let conn = server.conn(0).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let keepalives: Vec<Duration> = conn
        .frames()
        .into_iter()
        .filter(|(_, f)| *f == Frame::Text(r#"{"type":"KeepAlive"}"#.into()))
        .map(|(at, _)| at - start)
        .collect();
    assert_eq!(keepalives.len(), 1, "{keepalives:?}");
    assert!(keepalives[0] >= Duration::from_secs(5));
}

#[tokio::test]
async fn an_unauthorized_session_is_auth() {
    // AssemblyAI checks the key after the upgrade: an Error message, then the close.
    let server = WsTestServer::start(vec![vec![
        Step::Send(error(
            1008,
            "Unauthorized Connection: Missing Authorization header",
        )),
        Step::Close(
            1008,
            "Unauthorized Connection: Missing Authorization header".into(),
        ),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Auth)]
    );
}

#[tokio::test]
async fn a_refused_upgrade_is_auth_and_is_not_retried() {
    let server = WsTestServer::start(vec![vec![Step::Refuse {
        status: 401,
        headers: vec![],
        body: json!({"error": "Invalid API key"}).to_string(),
    }]])
    .await;
    assert_eq!(
        provider(&server).connect().await.err().unwrap(),
        ProviderError::Auth
    );
    assert_eq!(server.handshakes().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_upgrade_is_retried_after_retry_after() {
    let server = WsTestServer::start(vec![
        vec![Step::Refuse {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: json!({"error": "Too many requests"}).to_string(),
        }],
        vec![
            Step::Send(begin()),
            Step::Send(turn(0, "Hi.", true, true, "")),
        ],
    ])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(session.events.recv().await.unwrap(), final_("Hi."));
    let h = server.handshakes();
    assert!(h[1].at - h[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn too_many_sessions_is_rate_limited() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(error(
            3009,
            "Unauthorized Connection: Too many concurrent sessions",
        )),
        Step::Close(
            3009,
            "Unauthorized Connection: Too many concurrent sessions".into(),
        ),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::RateLimited {
            retry_after: None
        })]
    );
}

#[tokio::test]
async fn a_close_without_an_error_message_is_read_from_its_code() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::Close(3005, "Session Cancelled: An error occurred".into()),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Unavailable(
            "AssemblyAI error 3005: Session Cancelled: An error occurred".into()
        ))]
    );
}

#[tokio::test]
async fn bad_audio_framing_is_a_protocol_error() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::AwaitAudio(FRAME_BYTES),
        Step::Send(error(
            3007,
            "Input duration violation: 20 ms. Expected between 50 and 1000 ms",
        )),
        Step::Close(3007, "See Error message for details".into()),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    session.input.push_audio(&tone(800));
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Protocol(
            "AssemblyAI error 3007: Input duration violation: 20 ms. Expected between 50 and 1000 ms"
                .into()
        ))]
    );
}

#[tokio::test]
async fn malformed_messages_are_skipped() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::Send("{\"type\": \"Turn\", \"transcript\": ".into()),
        Step::Send(json!({"type": "Turn", "end_of_turn": "yes"}).to_string()),
        Step::Send(turn(0, "Still here.", true, true, "")),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(session.events.recv().await.unwrap(), final_("Still here."));
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_an_error_after_what_arrived() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(begin()),
        Step::Send(turn(0, "the answer", false, false, "")),
        Step::Cut,
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [
            SttEvent::Interim("the answer".into()),
            SttEvent::Error(ProviderError::Unavailable("connection lost".into()))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_service_times_out() {
    let server = WsTestServer::start(vec![vec![Step::Send(begin()), Step::StopReading]]).await;
    let stt = AssemblyAiStt::new(AssemblyAiConfig {
        idle_timeout: Duration::from_secs(8),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Timeout)]
    );
}

#[tokio::test]
async fn push_audio_never_blocks_when_the_service_stops_reading() {
    let server = WsTestServer::start(vec![vec![Step::Send(begin()), Step::StopReading]]).await;
    let stt = AssemblyAiStt::new(AssemblyAiConfig {
        idle_timeout: Duration::from_secs(600),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    let chunk = tone(320);
    let mut pushed = 0u64;
    while stt.dropped_audio().is_zero() {
        session.input.push_audio(&chunk);
        pushed += 1;
        tokio::task::yield_now().await;
        assert!(pushed < 2_000_000, "the queue never filled");
    }
    for _ in 0..50 {
        session.input.push_audio(&chunk);
    }
    assert!(stt.dropped_audio() >= Duration::from_millis(950));
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = Captured::default();
    let _guard = logs.install();
    tracing::callsite::rebuild_interest_cache();
    let server = WsTestServer::start(vec![
        vec![Step::Refuse {
            status: 400,
            headers: vec![],
            body: json!({"error": format!("bad key {KEY}")}).to_string(),
        }],
        vec![
            Step::Send(error(3006, &format!("Invalid JSON: {KEY}"))),
            Step::Close(3006, "See Error message for details".into()),
        ],
        vec![Step::Close(3005, format!("oops {KEY}"))],
    ])
    .await;
    let cfg = AssemblyAiConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..config(&server)
    };
    let stt = AssemblyAiStt::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{stt:?}")];
    let e = stt.connect().await.err().unwrap();
    shown.push(format!("{e} {e:?}"));
    for _ in 0..2 {
        let mut s = stt.connect().await.unwrap();
        for e in collect(&mut s).await {
            shown.push(format!("{e:?}"));
        }
    }
    assert!(
        shown.iter().any(|s| s.contains("Invalid JSON: ***")),
        "{shown:?}"
    );
    assert!(shown.iter().any(|s| s.contains("oops ***")), "{shown:?}");
    let logs = logs.text();
    assert!(
        logs.contains("assemblyai"),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}
