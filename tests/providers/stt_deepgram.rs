//! Deepgram live streaming against a Deepgram-protocol test server (`stt_support`): a local
//! WebSocket server that answers as Deepgram's streaming API documents (`Results` with
//! `is_final`/`speech_final`/`from_finalize`, `Metadata`, `SpeechStarted`, `UtteranceEnd`,
//! refused upgrades with `{"err_code", "err_msg"}` bodies, close frames with `DATA-`/`NET-`
//! reasons).
//!
//! What hark sends (URL, query, headers, PCM16 frames, control messages) is checked as strictly
//! as what it makes of the replies. Tests that wait run on a paused tokio clock.

use crate::stt_support;
use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::logs::Captured;
use hark::audio::pcm::{decode_pcm16, encode_pcm16};
use hark::providers::http::{ApiKey, RetryPolicy};
use hark::providers::stt::{DeepgramConfig, DeepgramStt};
use hark::providers::{ProviderError, Stt, SttEvent, SttSession};
use serde_json::json;
use stt_support::{Frame, Step, WsTestServer};
use support::alloc;
use tokio::sync::Notify;
use tokio::time::Instant;

const KEY: &str = "dg-test-0123456789abcdef";
const FRAME_BYTES: usize = 1280; // 40 ms of PCM16 at 16 kHz

fn config(server: &WsTestServer) -> DeepgramConfig {
    DeepgramConfig {
        url: server.url("/v1/listen"),
        api_key: Some(ApiKey::new(KEY)),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        ..DeepgramConfig::new()
    }
}

fn provider(server: &WsTestServer) -> DeepgramStt {
    DeepgramStt::new(config(server)).unwrap()
}

/// A `Results` message as Deepgram streams it.
pub(crate) fn results(
    transcript: &str,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
) -> String {
    json!({
        "type": "Results", "channel_index": [0, 1], "duration": 1.04, "start": 0.0,
        "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{
            "transcript": transcript, "confidence": 0.97,
            "words": transcript.split_whitespace().enumerate().map(|(i, w)| json!({
                "word": w.to_lowercase(), "start": i as f64 * 0.3, "end": i as f64 * 0.3 + 0.25,
                "confidence": 0.97, "punctuated_word": w})).collect::<Vec<_>>(),
        }]},
        "metadata": {"request_id": "5f3a0c7e-test", "model_info": {"name": "general-nova-3",
            "version": "2025-01-01.0", "arch": "nova-3"}, "model_uuid": "uuid-test"},
    })
    .to_string()
}

fn metadata() -> String {
    json!({"type": "Metadata", "transaction_key": "deprecated", "request_id": "5f3a0c7e-test",
           "sha256": "e3b0c442", "created": "2025-01-01T00:00:00.000Z", "duration": 2.5,
           "channels": 1})
    .to_string()
}

fn final_(text: &str) -> SttEvent {
    SttEvent::Final {
        text: text.into(),
        confidence: Some(0.97),
    }
}

/// A tone, so the bytes on the wire can be compared sample for sample.
fn tone(n: usize, from: usize) -> Vec<f32> {
    (from..from + n)
        .map(|i| 0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
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
async fn connects_with_the_documented_url_query_and_token() {
    let server = WsTestServer::start(vec![vec![]]).await;
    let stt = DeepgramStt::new(DeepgramConfig {
        language: Some("en-US".into()),
        ..config(&server)
    })
    .unwrap();
    assert_eq!((stt.label(), stt.sample_rate()), ("deepgram", 16_000));
    let session = stt.connect().await.unwrap();
    let conn = server.conn(0).await;
    assert_eq!(
        conn.handshake.uri,
        "/v1/listen?model=nova-3&language=en-US&encoding=linear16&sample_rate=16000&channels=1\
         &interim_results=true&punctuate=true&smart_format=true&endpointing=300"
    );
    assert_eq!(
        conn.handshake.headers["authorization"],
        format!("Token {KEY}")
    );
    drop(session);
    conn.wait_eof().await;
}

#[tokio::test]
async fn audio_goes_as_pcm16_frames_of_40_ms_and_flush_sends_finalize_after_it() {
    let server = WsTestServer::start(vec![vec![
        Step::AwaitText("Finalize"),
        Step::Send(results("Hello", false, false, false)),
        Step::Send(results("Hello there.", true, true, true)),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    // 100 ms in uneven pieces: two whole frames and a partial one, padded on flush.
    let audio = tone(1600, 0);
    for piece in audio.chunks(333) {
        session.input.push_audio(piece);
    }
    session.input.flush();
    assert_eq!(
        session.events.recv().await.unwrap(),
        SttEvent::Interim("Hello".into())
    );
    assert_eq!(session.events.recv().await.unwrap(), final_("Hello there."));

    let conn = server.conn(0).await;
    let frames = conn.binaries();
    assert_eq!(
        frames.iter().map(Vec::len).collect::<Vec<_>>(),
        [FRAME_BYTES; 3]
    );
    let mut expected = Vec::new();
    encode_pcm16(&audio, &mut expected);
    expected.resize(3 * FRAME_BYTES, 0);
    assert_eq!(
        frames.concat(),
        expected,
        "PCM16 little-endian, padded with silence"
    );
    let mut decoded = Vec::new();
    decode_pcm16(&frames.concat(), &mut decoded);
    assert!((decoded[100] - audio[100]).abs() < 1e-4);
    // The finalize comes after the audio it finalizes.
    let order: Vec<_> = conn
        .frames()
        .into_iter()
        .filter(|(_, f)| !matches!(f, Frame::Ping))
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        order.last(),
        Some(&Frame::Text(r#"{"type":"Finalize"}"#.into()))
    );
    assert_eq!(order.len(), 4);
}

#[tokio::test]
async fn interim_results_then_finals_map_to_events_and_empty_ones_are_none() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(json!({"type": "SpeechStarted", "channel": [0], "timestamp": 0.5}).to_string()),
        Step::Send(results("", false, false, false)),
        Step::Send(results("book", false, false, false)),
        Step::Send(results("book a room", false, false, false)),
        Step::Send(results("Book a room", true, false, false)),
        Step::Send(results("for two", false, false, false)),
        Step::Send(results("for two nights.", true, true, false)),
        Step::Send(
            json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.4}).to_string(),
        ),
        Step::Send(results("", true, true, true)),
        Step::Send(results("Next.", true, true, false)),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(session.events.recv().await.unwrap());
    }
    assert_eq!(
        got,
        [
            SttEvent::Interim("book".into()),
            SttEvent::Interim("book a room".into()),
            final_("Book a room"),
            SttEvent::Interim("for two".into()),
            final_("for two nights."),
            // The empty interim and the empty finalize result were no events.
            final_("Next."),
        ]
    );
}

#[tokio::test]
async fn dropping_the_input_sends_closestream_and_the_last_transcripts_still_arrive() {
    let server = WsTestServer::start(vec![vec![
        Step::AwaitText("CloseStream"),
        Step::Send(results("Goodbye.", true, true, false)),
        Step::Send(metadata()),
        Step::Close(1000, String::new()),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    session.input.push_audio(&tone(800, 0)); // 50 ms: one frame and a partial one
    drop(session.input);
    let mut events = Vec::new();
    while let Some(e) = session.events.recv().await {
        events.push(e);
    }
    assert_eq!(
        events,
        [final_("Goodbye.")],
        "no error: the end was asked for"
    );
    let conn = server.conn(0).await;
    conn.wait_eof().await;
    let texts = conn.texts();
    assert_eq!(texts, [r#"{"type":"CloseStream"}"#]);
    assert_eq!(
        conn.binaries().len(),
        2,
        "the partial frame was sent before closing"
    );
}

#[tokio::test(start_paused = true)]
async fn keepalive_is_sent_after_five_seconds_without_audio_and_not_while_audio_flows() {
    let server = WsTestServer::start(vec![vec![]]).await;
    let session = provider(&server).connect().await.unwrap();
    let start = Instant::now();
    let conn = server.conn(0).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let keepalives: Vec<Duration> = conn
        .frames()
        .into_iter()
        .filter(|(_, f)| *f == Frame::Text(r#"{"type":"KeepAlive"}"#.into()))
        .map(|(at, _)| at - start)
        .collect();
    assert_eq!(keepalives.len(), 2, "{keepalives:?}");
    assert!(keepalives[0] >= Duration::from_secs(5) && keepalives[0] < Duration::from_millis(5100));
    assert!(keepalives[1] >= Duration::from_secs(10));
    drop(session);

    let server = WsTestServer::start(vec![vec![]]).await;
    let mut session = provider(&server).connect().await.unwrap();
    let conn = server.conn(0).await;
    for i in 0..600 {
        session.input.push_audio(&tone(320, i * 320));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(conn.texts().is_empty(), "{:?}", conn.texts());
    assert!(conn.binaries().len() >= 290);
}

#[tokio::test]
async fn malformed_messages_are_skipped_and_the_stream_goes_on() {
    let logs = Captured::default();
    let _guard = logs.install();
    let server = WsTestServer::start(vec![vec![
        Step::Send("{\"type\": \"Results\", \"channel\": ".into()),
        Step::Send(json!({"type": "Results", "channel": "not an object"}).to_string()),
        Step::Send(results("Still here.", true, true, false)),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(session.events.recv().await.unwrap(), final_("Still here."));
    assert!(logs.text().contains("malformed message"), "{}", logs.text());
}

#[tokio::test]
async fn a_refused_key_is_auth_and_is_not_retried() {
    let server = WsTestServer::start(vec![vec![Step::Refuse {
        status: 401,
        headers: vec![("dg-error", "Invalid credentials.".into())],
        body: json!({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.",
                     "request_id": "r-1"})
        .to_string(),
    }]])
    .await;
    let err = provider(&server).connect().await.err().unwrap();
    assert_eq!(err, ProviderError::Auth);
    assert_eq!(server.handshakes().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_upgrade_is_retried_after_retry_after() {
    let server = WsTestServer::start(vec![
        vec![Step::Refuse {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: json!({"err_code": "TOO_MANY_REQUESTS", "err_msg": "Too many requests.",
                         "request_id": "r-2"})
            .to_string(),
        }],
        vec![Step::Send(results("Hi.", true, true, false))],
    ])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(session.events.recv().await.unwrap(), final_("Hi."));
    let h = server.handshakes();
    assert_eq!(h.len(), 2);
    let waited = h[1].at - h[0].at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_at_the_upgrade_are_retried_then_unavailable() {
    let server = WsTestServer::start(vec![vec![Step::Refuse {
        status: 503,
        headers: vec![],
        body: json!({"err_code": "SERVICE_UNAVAILABLE", "err_msg": "try later"}).to_string(),
    }]])
    .await;
    let err = provider(&server).connect().await.err().unwrap();
    assert_eq!(err, ProviderError::Unavailable("HTTP 503".into()));
    assert_eq!(server.handshakes().len(), 3, "three attempts");
}

#[tokio::test]
async fn undecodable_audio_closes_with_1008_and_ends_the_stream_with_a_protocol_error() {
    let server = WsTestServer::start(vec![vec![
        Step::AwaitAudio(FRAME_BYTES),
        Step::Close(1008, "DATA-0000".into()),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    session.input.push_audio(&tone(640, 0));
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Protocol(
            "closed by the service (1008): DATA-0000".into()
        ))]
    );
}

#[tokio::test]
async fn a_net_timeout_close_is_unavailable() {
    let server = WsTestServer::start(vec![vec![Step::Close(1011, "NET-0001".into())]]).await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Unavailable(
            "closed by the service (1011): NET-0001".into()
        ))]
    );
}

#[tokio::test]
async fn a_normal_close_the_session_did_not_ask_for_is_still_an_error() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(results("Hi.", true, true, false)),
        Step::Close(1000, String::new()),
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [
            final_("Hi."),
            SttEvent::Error(ProviderError::Unavailable(
                "the service ended the stream".into()
            ))
        ]
    );
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_an_error_after_what_arrived() {
    let server = WsTestServer::start(vec![vec![
        Step::Send(results("The answer", false, false, false)),
        Step::Cut,
    ]])
    .await;
    let mut session = provider(&server).connect().await.unwrap();
    assert_eq!(
        collect(&mut session).await,
        [
            SttEvent::Interim("The answer".into()),
            SttEvent::Error(ProviderError::Unavailable("connection lost".into()))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_service_times_out() {
    let server = WsTestServer::start(vec![vec![Step::StopReading]]).await;
    let stt = DeepgramStt::new(DeepgramConfig {
        idle_timeout: Duration::from_secs(6),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    let start = Instant::now();
    assert_eq!(
        collect(&mut session).await,
        [SttEvent::Error(ProviderError::Timeout)]
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(6) && waited < Duration::from_millis(6100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_but_healthy_service_answers_pings_and_does_not_time_out() {
    let server = WsTestServer::start(vec![vec![]]).await;
    let stt = DeepgramStt::new(DeepgramConfig {
        idle_timeout: Duration::from_secs(6),
        ..config(&server)
    })
    .unwrap();
    let mut session = stt.connect().await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(60), session.events.recv()).await;
    assert!(quiet.is_err(), "no event in a minute of silence: {quiet:?}");
    let pings = server
        .conn(0)
        .await
        .frames()
        .iter()
        .filter(|(_, f)| *f == Frame::Ping)
        .count();
    assert!(pings >= 19, "a ping every 3 s: {pings}");
}

#[tokio::test]
async fn dropping_the_session_closes_the_connection() {
    let server = WsTestServer::start(vec![vec![
        Step::AwaitText("CloseStream"),
        Step::Send(metadata()),
        Step::Close(1000, String::new()),
    ]])
    .await;
    let session = provider(&server).connect().await.unwrap();
    let conn = server.conn(0).await;
    drop(session);
    tokio::time::timeout(Duration::from_secs(10), conn.wait_eof())
        .await
        .expect("the server saw the connection close");
}

#[tokio::test]
async fn push_audio_never_blocks_when_the_service_stops_reading_and_counts_the_drops() {
    let server = WsTestServer::start(vec![vec![Step::StopReading]]).await;
    let stt = DeepgramStt::new(DeepgramConfig {
        idle_timeout: Duration::from_secs(600),
        ..config(&server)
    })
    .unwrap();
    let logs = Captured::default();
    let _guard = logs.install();
    let mut session = stt.connect().await.unwrap();
    // On this single-threaded runtime a push that blocked would hang the test; each push
    // returns, the writer fills the socket's buffers, then the queue fills and audio drops.
    let chunk = tone(320, 0);
    let mut pushed = 0u64;
    while stt.dropped_audio().is_zero() {
        session.input.push_audio(&chunk);
        pushed += 1;
        tokio::task::yield_now().await;
        assert!(pushed < 2_000_000, "the queue never filled");
    }
    for _ in 0..100 {
        session.input.push_audio(&chunk);
    }
    assert!(
        stt.dropped_audio() >= Duration::from_secs(2),
        "{:?}",
        stt.dropped_audio()
    );
    assert!(
        logs.text().contains("audio dropped"),
        "the drop is logged: {}",
        logs.text()
    );
    assert_eq!(
        logs.text().matches("audio dropped").count(),
        1,
        "at most once a second"
    );
}

#[tokio::test]
async fn push_audio_allocates_nothing_once_running() {
    let server = WsTestServer::start(vec![vec![]]).await;
    let mut session = provider(&server).connect().await.unwrap();
    let conn = server.conn(0).await;
    let chunk = tone(320, 0);
    let mut allocations = 0;
    for i in 0..1000 {
        // From the 200th push on (100 frames), the frame buffers and the queue's blocks
        // have gone round: count.
        alloc::start();
        session.input.push_audio(&chunk);
        let n = alloc::stop();
        if i >= 200 {
            allocations += n;
        }
        // Let the writer send (its own allocations are not on the audio path).
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    conn.wait_until(|f| {
        f.iter()
            .filter(|(_, f)| matches!(f, Frame::Binary(_)))
            .count()
            >= 499
    })
    .await;
    assert_eq!(allocations, 0);
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = Captured::default();
    let _guard = logs.install();
    let server = WsTestServer::start(vec![
        vec![Step::Refuse {
            status: 401,
            headers: vec![],
            body: json!({"err_code": "INVALID_AUTH", "err_msg": format!("bad key {KEY}")})
                .to_string(),
        }],
        vec![Step::Refuse {
            status: 400,
            headers: vec![],
            body: json!({"error": format!("bad key {KEY}")}).to_string(),
        }],
        vec![Step::Close(1008, format!("DATA-0000 {KEY}"))],
        vec![Step::Close(4000, format!("bad {KEY}"))],
    ])
    .await;
    let cfg = DeepgramConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        ..config(&server)
    };
    let stt = DeepgramStt::new(cfg.clone()).unwrap();
    let mut shown = vec![format!("{cfg:?}"), format!("{stt:?}")];
    for _ in 0..2 {
        let e = stt.connect().await.err().unwrap();
        shown.push(format!("{e} {e:?}"));
    }
    for _ in 0..2 {
        let mut s = stt.connect().await.unwrap();
        for e in collect(&mut s).await {
            shown.push(format!("{e:?}"));
        }
    }
    assert!(
        shown.iter().any(|s| s.contains("DATA-0000 ***")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|s| s.contains("HTTP 400: bad key ***")),
        "{shown:?}"
    );
    let logs = logs.text();
    assert!(
        logs.contains("deepgram"),
        "the test captured hark's logs: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}

/// Latency from a transcript leaving the test server to its event reaching the session, over
/// many messages, one at a time. Printed (run with `--nocapture`), never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_to_event_latency_report() {
    const N: usize = 200;
    let go = Arc::new(Notify::new());
    let mut script = Vec::new();
    for i in 0..N {
        script.push(Step::Send(results(
            &format!("word {i}"),
            false,
            false,
            false,
        )));
        script.push(Step::Wait(go.clone()));
    }
    let server = WsTestServer::start(vec![script]).await;
    let mut session = provider(&server).connect().await.unwrap();
    let conn = server.conn(0).await;
    let mut received = Vec::new();
    for _ in 0..N {
        session.events.recv().await.unwrap();
        received.push(std::time::Instant::now());
        go.notify_one();
    }
    let sent = conn.sent_at.lock().unwrap().clone();
    let mut micros: Vec<u128> = sent
        .iter()
        .zip(&received)
        .map(|(s, r)| r.duration_since(*s).as_micros())
        .collect();
    micros.sort();
    println!(
        "deepgram transcript → SttEvent over {N} messages: median {} µs, p90 {} µs, max {} µs",
        micros[N / 2],
        micros[N * 9 / 10],
        micros[N - 1]
    );
}
