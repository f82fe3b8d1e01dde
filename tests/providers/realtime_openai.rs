//! The OpenAI Realtime provider against an OpenAI-Realtime-protocol test server: a WebSocket
//! server on a local socket, written here, that records the handshake and every client event
//! and answers with the server events the Realtime API documents (`session.updated`,
//! `input_audio_buffer.speech_started`, `response.output_audio.delta`, `response.done`,
//! `error`…), in the GA names and, where noted, the beta ones.
//!
//! What hark sends (URL, headers, `session.update`, audio framing and rate, each command's
//! event) is checked as strictly as what it makes of the replies. Timeouts run on a paused
//! tokio clock. The last test runs a whole `AgentSession` against the server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::logs::Captured;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hark::agent::{ChatRole, ToolSpec};
use hark::providers::http::ApiKey;
use hark::providers::realtime::openai::{OpenAiRealtime, OpenAiRealtimeConfig};
use hark::providers::{
    ProviderError, Realtime, RealtimeCommand, RealtimeEvent, RealtimeModality, RealtimeSession,
    RealtimeSetup, ToolCallRequest,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "sk-rt-test-0123456789abcdef";

// ---- the protocol test server ------------------------------------------------------------

/// How the server treats the handshake and `session.update`.
#[derive(Clone)]
enum Setup {
    /// `session.created` on connect, `session.updated` for every `session.update`.
    Accept,
    /// Refuse the upgrade with this status, headers and body.
    Refuse(u16, Vec<(&'static str, &'static str)>, String),
    /// Answer the first `session.update` with this `error` event.
    Error(Value),
    /// Say nothing at all after the upgrade.
    Silent,
}

/// What the test makes the server do on a connection.
enum Action {
    Send(Message),
    /// Several messages written back to back, before any other task runs (on a paused clock,
    /// a client that read only the first could see time jump before the rest arrives).
    SendAll(Vec<Message>),
    Close(u16, String),
    /// Drop the socket without a closing handshake.
    Cut,
}

/// One accepted connection, as the test sees it.
struct Conn {
    /// Path and query of the upgrade request.
    uri: String,
    /// Upgrade request headers, names lowercased.
    headers: BTreeMap<String, String>,
    /// Client events other than audio appends; closed when the client has gone.
    events: mpsc::UnboundedReceiver<Value>,
    /// Every `input_audio_buffer.append`, decoded to PCM16 bytes, in order.
    audio: Arc<Mutex<Vec<Vec<u8>>>>,
    actions: mpsc::UnboundedSender<Action>,
}

impl Conn {
    /// The next client event (not audio), within 10 s.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("a client event within 10 s")
            .expect("the client is connected")
    }

    /// The next client event of type `kind`, skipping others.
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let e = self.next().await;
            if e["type"] == kind {
                return e;
            }
        }
    }

    /// Whether the client closed the connection (its events end), within 10 s.
    async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.events.recv()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(_)) => {}
            }
        }
    }

    fn send(&self, event: Value) {
        self.actions
            .send(Action::Send(Message::text(event.to_string())))
            .unwrap();
    }

    fn send_all(&self, events: &[Value]) {
        let messages = events
            .iter()
            .map(|e| Message::text(e.to_string()))
            .collect();
        self.actions.send(Action::SendAll(messages)).unwrap();
    }

    fn send_raw(&self, text: &str) {
        self.actions
            .send(Action::Send(Message::text(text)))
            .unwrap();
    }

    fn close(&self, code: u16, reason: &str) {
        self.actions
            .send(Action::Close(code, reason.to_owned()))
            .unwrap();
    }

    fn cut(&self) {
        self.actions.send(Action::Cut).unwrap();
    }

    /// All PCM16 audio appended so far, as samples.
    fn audio_samples(&self) -> Vec<i16> {
        self.audio
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])))
            .collect()
    }
}

/// The OpenAI-Realtime-protocol test server.
struct RealtimeTestServer {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl RealtimeTestServer {
    async fn start(setup: Setup) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
        let (conn_tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(tcp, setup.clone(), conn_tx.clone()));
            }
        });
        RealtimeTestServer { url, conns }
    }

    /// The next connection, once its session is set up (or refused).
    async fn conn(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(10), self.conns.recv())
            .await
            .expect("a connection within 10 s")
            .unwrap()
    }
}

// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
async fn serve(tcp: tokio::net::TcpStream, setup: Setup, conns: mpsc::UnboundedSender<Conn>) {
    let seen = Arc::new(Mutex::new((String::new(), BTreeMap::new())));
    let record = seen.clone();
    let refuse = match &setup {
        Setup::Refuse(status, headers, body) => Some((*status, headers.clone(), body.clone())),
        _ => None,
    };
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        *record.lock().unwrap() = (req.uri().to_string(), headers);
        if let Some((status, headers, body)) = refuse {
            let mut r = ErrorResponse::new(Some(body));
            *r.status_mut() = status.try_into().unwrap();
            for (k, v) in headers {
                r.headers_mut().insert(k, HeaderValue::from_static(v));
            }
            return Err(r);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(tcp, check).await;
    let (uri, headers) = seen.lock().unwrap().clone();
    let (event_tx, events) = mpsc::unbounded_channel();
    let (actions, mut action_rx) = mpsc::unbounded_channel();
    let audio = Arc::new(Mutex::new(Vec::new()));
    let conn = Conn {
        uri,
        headers,
        events,
        audio: audio.clone(),
        actions,
    };
    let Ok(mut ws) = ws else {
        let _ = conns.send(conn);
        return;
    };
    if matches!(setup, Setup::Accept) {
        let created = json!({"type": "session.created", "event_id": "event_1",
                             "session": {"type": "realtime", "id": "sess_1"}});
        let _ = ws.send(Message::text(created.to_string())).await;
    }
    let mut conn = Some(conn);
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { break };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let event: Value = serde_json::from_str(&text).expect("client events are JSON");
                if event["type"] == "input_audio_buffer.append" {
                    let b64 = event["audio"].as_str().expect("audio is a string");
                    audio.lock().unwrap().push(BASE64.decode(b64).expect("audio is base64"));
                    continue;
                }
                if event["type"] == "session.update" {
                    match &setup {
                        Setup::Accept => {
                            let updated = json!({"type": "session.updated", "event_id": "event_2",
                                                 "session": event["session"]});
                            let _ = ws.send(Message::text(updated.to_string())).await;
                        }
                        Setup::Error(e) if conn.is_some() => {
                            let _ = ws.send(Message::text(e.to_string())).await;
                        }
                        _ => {}
                    }
                    if let Some(c) = conn.take() {
                        // The test gets the connection once its setup was answered.
                        let _ = conns.send(c);
                    }
                }
                let _ = event_tx.send(event);
            }
            action = action_rx.recv() => match action {
                Some(Action::Send(m)) => { let _ = ws.send(m).await; }
                Some(Action::SendAll(ms)) => {
                    for m in ms {
                        let _ = ws.send(m).await;
                    }
                }
                Some(Action::Close(code, reason)) => {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await;
                }
                Some(Action::Cut) | None => return,
            },
        }
    }
    if let Some(c) = conn.take() {
        let _ = conns.send(c);
    }
}

// ---- server events as the API sends them -----------------------------------------------

fn pcm16_b64(samples: &[i16]) -> String {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

fn created(id: &str) -> Value {
    json!({"type": "response.created", "event_id": "ev", "response": {
        "id": id, "object": "realtime.response", "status": "in_progress", "output": []}})
}

fn audio_delta(response: &str, item: &str, samples: &[i16]) -> Value {
    json!({"type": "response.output_audio.delta", "event_id": "ev", "response_id": response,
           "item_id": item, "output_index": 0, "content_index": 0, "delta": pcm16_b64(samples)})
}

fn transcript_delta(response: &str, item: &str, text: &str) -> Value {
    json!({"type": "response.output_audio_transcript.delta", "event_id": "ev",
           "response_id": response, "item_id": item, "output_index": 0, "content_index": 0,
           "delta": text})
}

fn transcript_done(response: &str, item: &str, text: &str) -> Value {
    json!({"type": "response.output_audio_transcript.done", "event_id": "ev",
           "response_id": response, "item_id": item, "output_index": 0, "content_index": 0,
           "transcript": text})
}

fn done(id: &str, status: &str) -> Value {
    json!({"type": "response.done", "event_id": "ev", "response": {
        "id": id, "object": "realtime.response", "status": status, "output": [],
        "usage": {"total_tokens": 10, "input_tokens": 4, "output_tokens": 6}}})
}

fn error_event(kind: &str, code: &str, message: &str, cause: Option<&str>) -> Value {
    json!({"type": "error", "event_id": "ev", "error": {
        "type": kind, "code": code, "message": message, "param": null, "event_id": cause}})
}

// ---- the provider --------------------------------------------------------------------------

fn config(server: &RealtimeTestServer) -> OpenAiRealtimeConfig {
    OpenAiRealtimeConfig {
        url: server.url.clone(),
        api_key: Some(ApiKey::new(KEY)),
        ..OpenAiRealtimeConfig::new("gpt-realtime")
    }
}

fn weather() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Weather in a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}),
    }
}

fn setup(modality: RealtimeModality, audio_input: bool) -> RealtimeSetup {
    RealtimeSetup {
        instructions: "You are a hotel concierge.".into(),
        tools: vec![weather()],
        modality,
        audio_input,
    }
}

/// A connected session and the server's side of it.
async fn connected(server: &mut RealtimeTestServer) -> (RealtimeSession, Conn) {
    connected_with(server, config(server)).await
}

async fn connected_with(
    server: &mut RealtimeTestServer,
    config: OpenAiRealtimeConfig,
) -> (RealtimeSession, Conn) {
    let provider = OpenAiRealtime::new(config).unwrap();
    let session = provider
        .connect(setup(RealtimeModality::Audio, true))
        .await
        .unwrap();
    let mut conn = server.conn().await;
    conn.next_of("session.update").await;
    (session, conn)
}

async fn next_event(session: &mut RealtimeSession) -> RealtimeEvent {
    tokio::time::timeout(Duration::from_secs(10), session.events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the connection is open")
}

fn transcript(role: ChatRole, text: &str, is_final: bool) -> RealtimeEvent {
    RealtimeEvent::Transcript {
        role,
        text: text.into(),
        is_final,
    }
}

fn samples(pcm: &[i16]) -> Vec<f32> {
    pcm.iter().map(|s| f32::from(*s) / 32768.0).collect()
}

// ---- the handshake and the session -------------------------------------------------------

#[tokio::test]
async fn connects_with_the_key_as_a_bearer_header_and_configures_the_session_as_the_ga_api_specifies(
) {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let provider = OpenAiRealtime::new(config(&server)).unwrap();
    assert_eq!(
        (provider.input_rate(), provider.output_rate()),
        (24_000, 24_000)
    );
    let _session = provider
        .connect(setup(RealtimeModality::Audio, true))
        .await
        .unwrap();
    let mut conn = server.conn().await;
    assert_eq!(conn.uri, "/v1/realtime?model=gpt-realtime");
    assert_eq!(conn.headers["authorization"], format!("Bearer {KEY}"));
    assert!(
        !conn.headers.contains_key("openai-beta"),
        "the GA interface: no beta header"
    );
    let update = conn.next().await;
    assert_eq!(
        update,
        json!({
            "type": "session.update",
            "event_id": "hark_session_0",
            "session": {
                "type": "realtime",
                "instructions": "You are a hotel concierge.",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "turn_detection": {"type": "server_vad", "create_response": true,
                                           "interrupt_response": false},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
                },
                "tools": [{"type": "function", "name": "get_weather",
                           "description": "Weather in a city.",
                           "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}],
                "tool_choice": "auto",
            },
        })
    );
}

#[tokio::test]
async fn without_audio_input_there_is_no_turn_detection_and_text_answers_ask_for_text() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let provider = OpenAiRealtime::new(OpenAiRealtimeConfig {
        voice: "cedar".into(),
        api_key: None,
        ..config(&server)
    })
    .unwrap();
    let _session = provider
        .connect(RealtimeSetup {
            tools: vec![],
            ..setup(RealtimeModality::Text, false)
        })
        .await
        .unwrap();
    let mut conn = server.conn().await;
    assert!(
        !conn.headers.contains_key("authorization"),
        "no key, no header"
    );
    let s = conn.next().await["session"].clone();
    assert_eq!(s["output_modalities"], json!(["text"]));
    assert_eq!(s["audio"]["input"]["turn_detection"], Value::Null);
    assert_eq!(s["audio"]["input"]["transcription"], Value::Null);
    assert_eq!(s["audio"]["output"]["voice"], "cedar");
    assert_eq!(s["tools"], json!([]));
}

#[tokio::test]
async fn microphone_audio_is_appended_as_base64_pcm16_at_24_khz() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    // 100 ms at 24 kHz in 20 ms pushes: a ramp, so order and values can be checked.
    let ramp: Vec<f32> = (0..2400).map(|i| (i as f32 / 2400.0) - 0.5).collect();
    for chunk in ramp.chunks(480) {
        session.input.push_audio(chunk);
    }
    // A command after the audio: once it arrives, the audio sent before it has too.
    session
        .commands
        .send(RealtimeCommand::SendText("hi".into()))
        .unwrap();
    conn.next_of("conversation.item.create").await;
    let got = conn.audio_samples();
    assert_eq!(got.len(), 2400, "every sample, at the rate given");
    for (i, (g, want)) in got.iter().zip(&ramp).enumerate() {
        let want = (want * 32767.0).round() as i16;
        assert_eq!(*g, want, "sample {i}");
    }
}

// ---- answers ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_answer_streams_the_users_words_then_audio_and_transcript_then_ends_once() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.send(
        json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 120,
                     "item_id": "item_u1"}),
    );
    conn.send(
        json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900,
                     "item_id": "item_u1"}),
    );
    conn.send(
        json!({"type": "conversation.item.input_audio_transcription.delta",
                     "item_id": "item_u1", "content_index": 0, "delta": "what time"}),
    );
    conn.send(
        json!({"type": "conversation.item.input_audio_transcription.completed",
                     "item_id": "item_u1", "content_index": 0, "transcript": "what time is it"}),
    );
    conn.send(created("resp_1"));
    conn.send(audio_delta("resp_1", "item_a1", &[1000, -1000, 16384]));
    conn.send(transcript_delta("resp_1", "item_a1", "It is "));
    // The beta event names are understood too.
    conn.send(
        json!({"type": "response.audio.delta", "response_id": "resp_1",
                     "item_id": "item_a1", "delta": pcm16_b64(&[-32768, 32767])}),
    );
    conn.send(transcript_delta("resp_1", "item_a1", "noon."));
    conn.send(transcript_done("resp_1", "item_a1", "It is noon."));
    conn.send(done("resp_1", "completed"));

    let expected = [
        RealtimeEvent::UserSpeechStarted,
        RealtimeEvent::UserSpeechEnded,
        transcript(ChatRole::User, "what time", false),
        transcript(ChatRole::User, "what time is it", true),
        RealtimeEvent::Audio {
            item_id: "item_a1".into(),
            samples: samples(&[1000, -1000, 16384]),
        },
        transcript(ChatRole::Assistant, "It is ", false),
        RealtimeEvent::Audio {
            item_id: "item_a1".into(),
            samples: samples(&[-32768, 32767]),
        },
        transcript(ChatRole::Assistant, "noon.", false),
        transcript(ChatRole::Assistant, "It is noon.", true),
        RealtimeEvent::ResponseDone,
    ];
    for want in expected {
        assert_eq!(next_event(&mut session).await, want);
    }
}

#[tokio::test]
async fn text_answers_stream_as_transcripts() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.send(created("resp_t"));
    conn.send(
        json!({"type": "response.output_text.delta", "response_id": "resp_t",
                     "item_id": "item_t", "delta": "Hello"}),
    );
    conn.send(
        json!({"type": "response.text.done", "response_id": "resp_t",
                     "item_id": "item_t", "text": "Hello there."}),
    );
    conn.send(done("resp_t", "completed"));
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::Assistant, "Hello", false)
    );
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::Assistant, "Hello there.", true)
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
}

#[tokio::test]
async fn a_tool_call_is_passed_on_when_its_response_completes_and_its_output_goes_back_before_the_next_response(
) {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    conn.send(created("resp_1"));
    conn.send(
        json!({"type": "response.function_call_arguments.delta", "response_id": "resp_1",
                     "item_id": "item_f", "call_id": "call_1", "delta": "{\"city\":"}),
    );
    conn.send(
        json!({"type": "response.function_call_arguments.done", "response_id": "resp_1",
                     "item_id": "item_f", "output_index": 0, "call_id": "call_1",
                     "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}),
    );
    conn.send(done("resp_1", "completed"));
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::ToolCall(ToolCallRequest {
            call_id: "call_1".into(),
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
        })
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);

    let c = session.commands.clone();
    c.send(RealtimeCommand::ToolOutput {
        call_id: "call_1".into(),
        name: "get_weather".into(),
        output: "{\"temp_c\":21}".into(),
        is_error: false,
    })
    .unwrap();
    c.send(RealtimeCommand::ToolOutput {
        call_id: "call_2".into(),
        name: "get_weather".into(),
        output: "unknown city".into(),
        is_error: true,
    })
    .unwrap();
    c.send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": "{\"temp_c\":21}"}})
    );
    assert_eq!(
        conn.next().await,
        json!({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_2",
            "output": "{\"error\":\"unknown city\"}"}}),
        "a failure is said in the output"
    );
    assert_eq!(
        conn.next().await,
        json!({"type": "response.create", "event_id": "hark_response_1"})
    );
}

#[tokio::test]
async fn the_arguments_of_a_cancelled_response_are_not_run() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    session
        .commands
        .send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    conn.send(created("resp_1"));
    conn.send(
        json!({"type": "response.function_call_arguments.done", "response_id": "resp_1",
                     "item_id": "item_f", "call_id": "call_1", "name": "get_weather",
                     "arguments": "{\"ci"}),
    );
    conn.send(done("resp_1", "cancelled"));
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
}

#[tokio::test]
async fn text_turns_instructions_and_hand_offs_are_the_documented_client_events() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (session, mut conn) = connected(&mut server).await;
    let c = session.commands.clone();
    c.send(RealtimeCommand::SendText("A table for two.".into()))
        .unwrap();
    c.send(RealtimeCommand::CreateResponse {
        instructions: Some("Say exactly: Booked.".into()),
    })
    .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "A table for two."}]}})
    );
    assert_eq!(
        conn.next().await,
        json!({"type": "response.create", "event_id": "hark_response_1",
               "response": {"instructions": "Say exactly: Booked."}})
    );
    c.send(RealtimeCommand::UpdateSession {
        instructions: "You are billing.".into(),
        tools: vec![],
    })
    .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"type": "session.update", "event_id": "hark_session_2", "session": {
            "type": "realtime", "instructions": "You are billing.", "tools": [],
            "tool_choice": "auto"}})
    );
}

#[tokio::test]
async fn cancel_and_truncate_send_the_exact_fields_and_a_new_answer_waits_for_the_cancelled_one() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    // The service's turn detection started an answer on its own.
    conn.send(created("resp_1"));
    conn.send(audio_delta("resp_1", "item_a", &[100; 480]));
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
    let c = session.commands.clone();
    c.send(RealtimeCommand::Cancel).unwrap();
    c.send(RealtimeCommand::Truncate {
        item_id: "item_a".into(),
        played_ms: 1234,
    })
    .unwrap();
    c.send(RealtimeCommand::CreateResponse {
        instructions: Some("Say: sorry?".into()),
    })
    .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"type": "response.cancel", "event_id": "hark_cancel_1"})
    );
    assert_eq!(
        conn.next().await,
        json!({"type": "conversation.item.truncate", "event_id": "hark_truncate_2",
               "item_id": "item_a", "content_index": 0, "audio_end_ms": 1234})
    );
    // Only one response at a time: the new one is asked for after the cancelled one ends.
    tokio::task::yield_now().await;
    assert!(conn.events.try_recv().is_err(), "no response.create yet");
    conn.send(done("resp_1", "cancelled"));
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    assert_eq!(
        conn.next().await,
        json!({"type": "response.create", "event_id": "hark_response_3",
               "response": {"instructions": "Say: sorry?"}})
    );
}

#[tokio::test]
async fn a_request_waiting_behind_an_answer_ends_here_when_cancelled_and_a_late_cancel_is_no_error()
{
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    conn.send(created("resp_1"));
    conn.send(audio_delta("resp_1", "item_a", &[7; 24]));
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
    let c = session.commands.clone();
    c.send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap(); // waits for resp_1 to end
    c.send(RealtimeCommand::Cancel).unwrap();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::ResponseDone,
        "the waiting request ends at once"
    );
    assert_eq!(
        conn.next().await,
        json!({"type": "response.cancel", "event_id": "hark_cancel_1"})
    );
    // resp_1 had already ended on the service: the cancel is refused, harmlessly.
    conn.send(done("resp_1", "completed"));
    conn.send(error_event(
        "invalid_request_error",
        "response_cancel_not_active",
        "Cancellation failed: no active response found",
        Some("hark_cancel_1"),
    ));
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    // An answer the service started and cut before anything of it was passed on: the
    // session never saw it begin, so it does not end either.
    conn.send(created("resp_2"));
    conn.send(done("resp_2", "cancelled"));
    conn.send(json!({"type": "input_audio_buffer.speech_started"}));
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::UserSpeechStarted
    );
    assert!(
        conn.events.try_recv().is_err(),
        "the cancelled request was never sent"
    );
}

// ---- errors ----------------------------------------------------------------------------------

#[tokio::test]
async fn error_events_are_reported_and_the_connection_stays_usable() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    let c = session.commands.clone();
    // A refused response.create ends that response.
    c.send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    let create = conn.next().await;
    conn.send(error_event(
        "invalid_request_error",
        "invalid_value",
        "Invalid instructions",
        create["event_id"].as_str(),
    ));
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Protocol("Invalid instructions".into()))
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    // Raced by the service's own answer, it is served by that one.
    c.send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    let create = conn.next().await;
    conn.send(created("resp_vad"));
    conn.send(error_event(
        "invalid_request_error",
        "conversation_already_has_active_response",
        "Conversation already has an active response",
        create["event_id"].as_str(),
    ));
    conn.send(done("resp_vad", "completed"));
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    // A failed response says why, then ends.
    conn.send(created("resp_f"));
    conn.send(
        json!({"type": "response.done", "response": {"id": "resp_f", "status": "failed",
        "status_details": {"type": "failed", "error": {"type": "rate_limit_exceeded",
        "code": "rate_limit_exceeded", "message": "Rate limit reached"}}}}),
    );
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::RateLimited { retry_after: None })
    );
    // A server error about something else.
    conn.send(error_event(
        "server_error",
        "",
        "The server had an error",
        None,
    ));
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Unavailable("The server had an error".into()))
    );
    // Garbage is reported and skipped.
    conn.send_raw("{not json");
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Protocol(m)) if m.starts_with("malformed event")
    ));
    conn.send(audio_delta("resp_x", "item_x", &[]));
    conn.send_raw(
        r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AA=="}"#,
    );
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Audio {
            item_id: "item_x".into(),
            samples: vec![]
        }
    );
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Protocol(m)) if m.contains("half a PCM16 sample")
    ));
    conn.send(json!({"type": "input_audio_buffer.speech_started"}));
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::UserSpeechStarted
    );
}

#[tokio::test]
async fn a_refused_upgrade_or_session_fails_the_connect_with_the_mapped_error() {
    let refuse = |status, headers, body: &str| Setup::Refuse(status, headers, body.to_owned());
    let body = json!({"error": {"message": format!("Incorrect API key provided: {KEY}"),
                                "type": "invalid_request_error", "code": "invalid_api_key"}})
    .to_string();
    for (setup, want) in [
        (refuse(401, vec![], &body), ProviderError::Auth),
        (
            refuse(429, vec![("retry-after", "7")], ""),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            },
        ),
        (
            refuse(503, vec![], ""),
            ProviderError::Unavailable("HTTP 503".into()),
        ),
        (
            Setup::Error(error_event(
                "invalid_request_error",
                "invalid_value",
                "Invalid value: 'robot'. Supported values are: 'alloy', 'marin'.",
                Some("hark_session_0"),
            )),
            ProviderError::Protocol(
                "Invalid value: 'robot'. Supported values are: 'alloy', 'marin'.".into(),
            ),
        ),
    ] {
        let server = RealtimeTestServer::start(setup).await;
        let e = OpenAiRealtime::new(config(&server))
            .unwrap()
            .connect(setup_audio())
            .await
            .err()
            .expect("the connect fails");
        assert_eq!(e, want);
    }
}

fn setup_audio() -> RealtimeSetup {
    setup(RealtimeModality::Audio, true)
}

#[tokio::test]
async fn a_connection_cut_mid_answer_is_an_error_and_the_end_of_the_events() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.send(created("resp_1"));
    conn.send(audio_delta("resp_1", "item_a", &[5; 240]));
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
    conn.cut();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Unavailable("connection lost".into()))
    );
    assert!(session.events.recv().await.is_none(), "the events end");
}

#[tokio::test]
async fn a_close_by_the_service_says_why() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.close(1011, "internal error");
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Unavailable(
            "closed by the service (1011): internal error".into()
        ))
    );
    assert!(session.events.recv().await.is_none());
}

/// On a paused clock with real sockets, time jumps to the next timer whenever every task waits
/// for the network, so the test keeps a timer armed only while the stall itself is awaited, and
/// awaits without timeouts of its own.
#[tokio::test(start_paused = true)]
async fn a_stalled_answer_times_out_is_cancelled_and_its_late_events_are_dropped() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let cfg = OpenAiRealtimeConfig {
        response_timeout: Duration::from_secs(3),
        ..config(&server)
    };
    let (mut session, mut conn) = connected_with(&mut server, cfg).await;
    conn.send_all(&[created("resp_1"), audio_delta("resp_1", "item_a", &[1; 10])]);
    let first = session.events.recv().await.unwrap();
    assert!(matches!(first, RealtimeEvent::Audio { .. }), "{first:?}");
    let since = Instant::now();
    assert_eq!(
        session.events.recv().await.unwrap(),
        RealtimeEvent::Error(ProviderError::Timeout)
    );
    assert_eq!(since.elapsed(), Duration::from_secs(3));
    assert_eq!(
        session.events.recv().await.unwrap(),
        RealtimeEvent::ResponseDone
    );
    assert_eq!(conn.events.recv().await.unwrap()["type"], "response.cancel");
    // The stalled response wakes up: nothing of it reaches the session.
    conn.send_all(&[
        audio_delta("resp_1", "item_a", &[1; 10]),
        done("resp_1", "cancelled"),
        json!({"type": "input_audio_buffer.speech_started"}),
    ]);
    assert_eq!(
        session.events.recv().await.unwrap(),
        RealtimeEvent::UserSpeechStarted
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_never_accepts_the_session_times_out() {
    let server = RealtimeTestServer::start(Setup::Silent).await;
    let provider = OpenAiRealtime::new(OpenAiRealtimeConfig {
        setup_timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let start = Instant::now();
    assert_eq!(
        provider.connect(setup_audio()).await.err(),
        Some(ProviderError::Timeout)
    );
    assert_eq!(start.elapsed().as_secs(), 4);
}

#[tokio::test]
async fn dropping_the_session_closes_the_connection() {
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (session, mut conn) = connected(&mut server).await;
    drop(session);
    assert!(conn.closed().await, "the server saw the connection close");
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = Captured::default();
    let _guard = logs.install();

    let echo = format!("Incorrect API key provided: {KEY}");
    let mut shown = Vec::new();
    // Echoed in a refused upgrade, in a setup error, in an error event and in a close reason.
    let body = json!({"error": {"message": echo, "type": "invalid_request_error"}}).to_string();
    for setup in [
        Setup::Refuse(400, vec![], body),
        Setup::Error(error_event("invalid_request_error", "x", &echo, None)),
    ] {
        let server = RealtimeTestServer::start(setup).await;
        let provider = OpenAiRealtime::new(config(&server)).unwrap();
        shown.push(format!("{provider:?} {:?}", config(&server)));
        let e = provider.connect(setup_audio()).await.err().unwrap();
        shown.push(format!("{e} {e:?}"));
    }
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.send(error_event("server_error", "", &echo, None));
    conn.close(4000, &echo);
    while let Some(e) = session.events.recv().await {
        shown.push(format!("{e:?}"));
    }
    assert!(
        shown
            .iter()
            .any(|s| s.contains("Incorrect API key provided: ***")),
        "{shown:?}"
    );
    let logs = logs.text();
    assert!(
        logs.contains("realtime"),
        "hark's logs were captured: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
}

// ---- a whole session -----------------------------------------------------------------------

struct Concierge;

#[async_trait::async_trait]
impl hark::agent::Agent for Concierge {
    fn instructions(&self) -> String {
        "You are a hotel concierge.".into()
    }
}

/// The transport's output: how many samples arrived and how many were voiced.
#[derive(Clone, Default)]
struct Speaker(Arc<Mutex<(usize, usize)>>);

impl hark::session::AudioSink for Speaker {
    fn write(&mut self, frame: &[f32]) {
        let mut s = self.0.lock().unwrap();
        s.0 += frame.len();
        s.1 += frame.iter().filter(|x| x.abs() > 1e-4).count();
    }
}

/// Two seconds of real speech at 16 kHz (fetched by the test command; a clear failure if not).
fn speech_16k() -> Vec<f32> {
    let audio = crate::common::speech("clone-test.wav");
    let mut out = Vec::new();
    let mut r = hark::audio::resample::Resampler::new(audio.rate, 16_000);
    r.process(&audio.samples, &mut out);
    out.truncate(32_000);
    out
}

#[tokio::test]
async fn a_whole_session_hears_speech_through_the_model_and_plays_its_spoken_answer() {
    use hark::session::{AgentSession, AgentState, Providers, SessionEvent, SessionOptions};
    let mut server = RealtimeTestServer::start(Setup::Accept).await;
    let model: Arc<dyn Realtime> = Arc::new(OpenAiRealtime::new(config(&server)).unwrap());
    let speaker = Speaker::default();
    let session = AgentSession::start(
        Arc::new(Concierge),
        Providers {
            realtime: Some(model),
            ..Providers::default()
        },
        SessionOptions::default(),
        Box::new(speaker.clone()),
        hark::agent::ToolContext::default(),
    )
    .await
    .unwrap();
    let mut events = session.subscribe();
    let mut conn = server.conn().await;
    let update = conn.next_of("session.update").await;
    assert_eq!(
        update["session"]["instructions"],
        "You are a hotel concierge."
    );
    assert_eq!(update["session"]["output_modalities"], json!(["audio"]));

    // The user speaks: 2 s at the session's 16 kHz reach the service at 24 kHz.
    let speech = speech_16k();
    let input = session.input();
    for frame in speech.chunks(320) {
        input.push_audio(frame);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waiting = Instant::now();
    let heard = loop {
        let n = conn.audio_samples().len();
        if n >= 47_000 || waiting.elapsed() > Duration::from_secs(10) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(heard >= 47_000, "{heard} samples at 24 kHz for 2 s");
    assert!(heard <= 48_000, "{heard} samples at 24 kHz for 2 s");
    let rms = {
        let s = conn.audio_samples();
        (s.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    };
    assert!(rms > 300.0, "the speech itself arrived (rms {rms})");

    // The service hears the end of the turn and answers with 0.5 s of speech.
    conn.send(json!({"type": "input_audio_buffer.speech_started", "item_id": "item_u"}));
    conn.send(json!({"type": "input_audio_buffer.speech_stopped", "item_id": "item_u"}));
    conn.send(
        json!({"type": "conversation.item.input_audio_transcription.completed",
                     "item_id": "item_u", "content_index": 0,
                     "transcript": "Is the pool open?"}),
    );
    conn.send(created("resp_1"));
    for _ in 0..4 {
        conn.send(audio_delta("resp_1", "item_a", &[8192; 3000]));
    }
    conn.send(transcript_done("resp_1", "item_a", "Yes, until ten."));
    conn.send(done("resp_1", "completed"));

    let mut spoke = false;
    let mut metrics = None;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the answer plays within 10 s")
            .unwrap();
        match e {
            SessionEvent::AgentStateChanged {
                state: AgentState::Speaking,
            } => spoke = true,
            SessionEvent::AgentStateChanged {
                state: AgentState::Idle,
            } if spoke => break,
            SessionEvent::TurnMetrics(m) => metrics = Some(m),
            _ => {}
        }
    }
    let (_, voiced) = *speaker.0.lock().unwrap();
    let seconds = voiced as f64 / 16_000.0;
    assert!(
        (seconds - 0.5).abs() < 0.01,
        "the answer reached the transport: {seconds} s"
    );
    if metrics.is_none() {
        metrics = loop {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Ok(SessionEvent::TurnMetrics(m))) => break Some(m),
                Ok(Ok(_)) => {}
                _ => break None,
            }
        };
    }
    let m = metrics.expect("turn metrics");
    for (name, v) in [
        ("user_speech_end", m.user_speech_end),
        ("llm_first_token", m.llm_first_token),
        ("tts_first_byte", m.tts_first_byte),
        ("first_sample_played", m.first_sample_played),
    ] {
        assert!(v.is_some(), "{name} missing: {m:?}");
    }
    let history = session.history(false, false).await.unwrap();
    let texts: Vec<&str> = history
        .iter()
        .map(|i| i["content"][0].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Is the pool open?", "Yes, until ten."]);
    session.close().await;
    assert!(
        conn.closed().await,
        "closing the session closes the connection"
    );
}
