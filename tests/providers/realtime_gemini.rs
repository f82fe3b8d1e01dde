//! The Gemini Live provider against a Gemini-Live-protocol test server: a WebSocket server on a
//! local socket, written here, that records the handshake and every client message and answers
//! with the server messages the Live API documents (`setupComplete`, `serverContent` with
//! inline audio, transcriptions, `interrupted`, `turnComplete`; `toolCall`,
//! `sessionResumptionUpdate`, `goAway`), as JSON in binary frames the way the service sends
//! them (some in text frames, which are accepted too), and closes with the codes and reasons
//! it uses for errors.
//!
//! What hark sends (URL, the key's header, `setup`, audio framing and rate, each command's
//! message) is checked as strictly as what it makes of the replies. Timeouts run on a paused
//! tokio clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::logs::Captured;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hark::agent::{ChatRole, ToolSpec};
use hark::providers::http::ApiKey;
use hark::providers::realtime::gemini::{GeminiLive, GeminiLiveConfig};
use hark::providers::{
    ProviderError, Realtime, RealtimeCommand, RealtimeEvent, RealtimeModality, RealtimeSession,
    RealtimeSetup, ToolCallRequest,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "AIzaSy-test-0123456789abcdef";
const PATH: &str = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

// ---- the protocol test server ------------------------------------------------------------

/// How the server treats the handshake and `setup`.
#[derive(Clone)]
enum Setup {
    /// `setupComplete` for every `setup`.
    Accept,
    /// Refuse the upgrade with this status and body.
    Refuse(u16, String),
    /// Close with this code and reason on receiving `setup`, as the service does when it
    /// refuses a key or a model.
    Close(u16, String),
    /// Say nothing after the upgrade.
    Silent,
}

enum Action {
    /// Messages as JSON in binary frames, written back to back.
    Send(Vec<Value>),
    /// A message as JSON in a text frame.
    SendText(Value),
    SendRaw(&'static [u8]),
    Close(u16, String),
    Cut,
}

/// Audio chunks as received: MIME type and PCM16 bytes.
type AudioLog = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// One accepted connection, as the test sees it.
struct Conn {
    uri: String,
    headers: BTreeMap<String, String>,
    /// Client messages other than audio; closed when the client has gone.
    messages: mpsc::UnboundedReceiver<Value>,
    /// Every `realtimeInput.audio`: its MIME type and PCM16 bytes.
    audio: AudioLog,
    actions: mpsc::UnboundedSender<Action>,
}

impl Conn {
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.messages.recv())
            .await
            .expect("a client message within 10 s")
            .expect("the client is connected")
    }

    async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.messages.recv()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(_)) => {}
            }
        }
    }

    fn send(&self, messages: &[Value]) {
        self.actions.send(Action::Send(messages.to_vec())).unwrap();
    }

    fn close(&self, code: u16, reason: &str) {
        self.actions
            .send(Action::Close(code, reason.to_owned()))
            .unwrap();
    }

    fn audio_samples(&self) -> Vec<i16> {
        self.audio
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| {
                b.chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The Gemini-Live-protocol test server.
struct LiveTestServer {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl LiveTestServer {
    async fn start(setup: Setup) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}{PATH}", listener.local_addr().unwrap());
        let (conn_tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(tcp, setup.clone(), conn_tx.clone()));
            }
        });
        LiveTestServer { url, conns }
    }

    /// The next connection, once its setup was answered (or refused).
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
        Setup::Refuse(status, body) => Some((*status, body.clone())),
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
        if let Some((status, body)) = refuse {
            let mut r = ErrorResponse::new(Some(body));
            *r.status_mut() = status.try_into().unwrap();
            return Err(r);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(tcp, check).await;
    let (uri, headers) = seen.lock().unwrap().clone();
    let (message_tx, messages) = mpsc::unbounded_channel();
    let (actions, mut action_rx) = mpsc::unbounded_channel();
    let audio = Arc::new(Mutex::new(Vec::new()));
    let conn = Conn {
        uri,
        headers,
        messages,
        audio: audio.clone(),
        actions,
    };
    let Ok(mut ws) = ws else {
        let _ = conns.send(conn);
        return;
    };
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
                let m: Value = serde_json::from_str(&text).expect("client messages are JSON");
                if let Some(a) = m.pointer("/realtimeInput/audio") {
                    let bytes = BASE64.decode(a["data"].as_str().unwrap()).expect("base64 audio");
                    let mime = a["mimeType"].as_str().unwrap_or("").to_owned();
                    audio.lock().unwrap().push((mime, bytes));
                    continue;
                }
                if m.get("setup").is_some() {
                    match &setup {
                        Setup::Accept => {
                            let done = json!({"setupComplete": {}}).to_string();
                            let _ = ws.send(Message::binary(done.into_bytes())).await;
                        }
                        Setup::Close(code, reason) => {
                            let frame = CloseFrame { code: CloseCode::from(*code), reason: reason.clone().into() };
                            let _ = ws.close(Some(frame)).await;
                        }
                        _ => {}
                    }
                    if let Some(c) = conn.take() {
                        let _ = conns.send(c);
                    }
                }
                let _ = message_tx.send(m);
            }
            action = action_rx.recv() => match action {
                Some(Action::Send(ms)) => {
                    for m in ms {
                        let _ = ws.send(Message::binary(m.to_string().into_bytes())).await;
                    }
                }
                Some(Action::SendText(m)) => { let _ = ws.send(Message::text(m.to_string())).await; }
                Some(Action::SendRaw(b)) => { let _ = ws.send(Message::binary(b.to_vec())).await; }
                Some(Action::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = ws.close(Some(frame)).await;
                }
                Some(Action::Cut) | None => return,
            },
        }
    }
    if let Some(c) = conn.take() {
        let _ = conns.send(c);
    }
}

// ---- server messages as the API sends them -----------------------------------------------

fn pcm16_b64(samples: &[i16]) -> String {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

fn audio(samples: &[i16]) -> Value {
    json!({"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": pcm16_b64(samples)}}]}}})
}

fn said(text: &str) -> Value {
    json!({"serverContent": {"outputTranscription": {"text": text}}})
}

fn heard(text: &str) -> Value {
    json!({"serverContent": {"inputTranscription": {"text": text}}})
}

fn turn_complete() -> Value {
    json!({"serverContent": {"turnComplete": true}})
}

fn samples(pcm: &[i16]) -> Vec<f32> {
    pcm.iter().map(|s| f32::from(*s) / 32768.0).collect()
}

// ---- the provider --------------------------------------------------------------------------

fn config(server: &LiveTestServer) -> GeminiLiveConfig {
    GeminiLiveConfig {
        url: server.url.clone(),
        api_key: Some(ApiKey::new(KEY)),
        ..GeminiLiveConfig::new("gemini-live-2.5-flash-preview")
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

async fn connected(server: &mut LiveTestServer) -> (RealtimeSession, Conn) {
    connected_with(server, config(server)).await
}

async fn connected_with(
    server: &mut LiveTestServer,
    config: GeminiLiveConfig,
) -> (RealtimeSession, Conn) {
    let session = GeminiLive::new(config)
        .unwrap()
        .connect(setup(RealtimeModality::Audio, true))
        .await
        .unwrap();
    let mut conn = server.conn().await;
    assert!(conn.next().await.get("setup").is_some());
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

// ---- the handshake and the setup ---------------------------------------------------------

#[tokio::test]
async fn connects_with_the_key_in_a_header_never_the_url_and_sends_the_documented_setup() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let provider = GeminiLive::new(config(&server)).unwrap();
    assert_eq!(
        (provider.input_rate(), provider.output_rate()),
        (16_000, 24_000)
    );
    let _session = provider
        .connect(setup(RealtimeModality::Audio, true))
        .await
        .unwrap();
    let mut conn = server.conn().await;
    assert_eq!(conn.uri, PATH, "no query: the key is not in the URL");
    assert_eq!(conn.headers["x-goog-api-key"], KEY);
    assert_eq!(
        conn.next().await,
        json!({"setup": {
            "model": "models/gemini-live-2.5-flash-preview",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}},
            },
            "systemInstruction": {"parts": [{"text": "You are a hotel concierge."}]},
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                               "required": ["city"]},
            }]}],
            "realtimeInputConfig": {
                "automaticActivityDetection": {"disabled": false},
                "activityHandling": "NO_INTERRUPTION",
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "sessionResumption": {},
            "contextWindowCompression": {"slidingWindow": {}},
        }})
    );
}

#[tokio::test]
async fn text_answers_without_audio_input_ask_for_text_and_turn_activity_detection_off() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let _session = GeminiLive::new(GeminiLiveConfig {
        voice: "Kore".into(),
        api_key: None,
        ..config(&server)
    })
    .unwrap()
    .connect(RealtimeSetup {
        tools: vec![],
        ..setup(RealtimeModality::Text, false)
    })
    .await
    .unwrap();
    let mut conn = server.conn().await;
    assert!(!conn.headers.contains_key("x-goog-api-key"));
    let s = conn.next().await["setup"].clone();
    assert_eq!(
        s["generationConfig"],
        json!({"responseModalities": ["TEXT"]})
    );
    assert_eq!(
        s["realtimeInputConfig"]["automaticActivityDetection"],
        json!({"disabled": true})
    );
    for absent in [
        "tools",
        "inputAudioTranscription",
        "outputAudioTranscription",
    ] {
        assert!(s.get(absent).is_none(), "{absent} sent: {s}");
    }
}

#[tokio::test]
async fn microphone_audio_goes_as_realtime_input_pcm16_at_16_khz() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (session, mut conn) = connected(&mut server).await;
    let mut session = session;
    let ramp: Vec<f32> = (0..1600).map(|i| (i as f32 / 1600.0) - 0.5).collect();
    for chunk in ramp.chunks(320) {
        session.input.push_audio(chunk);
    }
    session
        .commands
        .send(RealtimeCommand::SendText("hi".into()))
        .unwrap();
    conn.next().await;
    assert!(conn
        .audio
        .lock()
        .unwrap()
        .iter()
        .all(|(mime, _)| mime == "audio/pcm;rate=16000"));
    let got = conn.audio_samples();
    assert_eq!(got.len(), 1600);
    for (i, (g, want)) in got.iter().zip(&ramp).enumerate() {
        assert_eq!(*g, (want * 32767.0).round() as i16, "sample {i}");
    }
    assert!(session.events.try_recv().is_err());
}

// ---- answers ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_spoken_answer_streams_audio_and_both_transcripts_and_ends_at_turn_complete() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.send(&[
        heard("Is the pool"),
        heard(" open?"),
        audio(&[1000, -1000]),
        said("Yes, "),
        audio(&[16384]),
        said("until ten."),
        json!({"serverContent": {"generationComplete": true}}),
        json!({"usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 5}}),
        turn_complete(),
    ]);
    let expected = [
        transcript(ChatRole::User, "Is the pool", false),
        transcript(ChatRole::User, " open?", false),
        RealtimeEvent::Audio {
            item_id: "gemini_turn_1".into(),
            samples: samples(&[1000, -1000]),
        },
        transcript(ChatRole::Assistant, "Yes, ", false),
        RealtimeEvent::Audio {
            item_id: "gemini_turn_1".into(),
            samples: samples(&[16384]),
        },
        transcript(ChatRole::Assistant, "until ten.", false),
        transcript(ChatRole::User, "Is the pool open?", true),
        transcript(ChatRole::Assistant, "Yes, until ten.", true),
        RealtimeEvent::ResponseDone,
    ];
    for want in expected {
        assert_eq!(next_event(&mut session).await, want);
    }
    // The next turn's audio is a new item.
    conn.send(&[audio(&[5]), turn_complete()]);
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Audio {
            item_id: "gemini_turn_2".into(),
            samples: samples(&[5]),
        }
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
}

#[tokio::test]
async fn a_tool_call_ends_the_response_and_the_outputs_go_back_together_and_are_answered() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    conn.send(&[
        json!({"toolCall": {"functionCalls": [
            {"id": "fc_1", "name": "get_weather", "args": {"city": "Paris"}},
            {"id": "fc_2", "name": "get_weather", "args": {"city": "Atlantis"}},
        ]}}),
        // Some models end the turn after a tool call: not a second end.
        turn_complete(),
    ]);
    for (id, city) in [("fc_1", "Paris"), ("fc_2", "Atlantis")] {
        assert_eq!(
            next_event(&mut session).await,
            RealtimeEvent::ToolCall(ToolCallRequest {
                call_id: id.into(),
                name: "get_weather".into(),
                arguments: json!({ "city": city }).to_string(),
            })
        );
    }
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    let c = session.commands.clone();
    c.send(RealtimeCommand::ToolOutput {
        call_id: "fc_1".into(),
        name: "get_weather".into(),
        output: "{\"temp_c\":21}".into(),
        is_error: false,
    })
    .unwrap();
    c.send(RealtimeCommand::ToolOutput {
        call_id: "fc_2".into(),
        name: "get_weather".into(),
        output: "unknown city".into(),
        is_error: true,
    })
    .unwrap();
    c.send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"toolResponse": {"functionResponses": [
            {"id": "fc_1", "name": "get_weather", "response": {"output": "{\"temp_c\":21}"}},
            {"id": "fc_2", "name": "get_weather", "response": {"error": "unknown city"}},
        ]}})
    );
    // The service answers the results by itself: the response asked for is that answer.
    conn.send(&[said("Paris is 21 degrees."), turn_complete()]);
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::Assistant, "Paris is 21 degrees.", false)
    );
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::Assistant, "Paris is 21 degrees.", true)
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    // Nothing else was sent for the CreateResponse.
    c.send(RealtimeCommand::SendText("thanks".into())).unwrap();
    assert!(conn.next().await.get("clientContent").is_some());
}

#[tokio::test]
async fn text_turns_and_answers_asked_for_are_client_content() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    let c = session.commands.clone();
    c.send(RealtimeCommand::SendText("A table for two.".into()))
        .unwrap();
    c.send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "A table for two."}]}],
                                 "turnComplete": false}})
    );
    assert_eq!(
        conn.next().await,
        json!({"clientContent": {"turnComplete": true}})
    );
    // A turn asked for that ends without output still ends.
    conn.send(&[turn_complete()]);
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    c.send(RealtimeCommand::CreateResponse {
        instructions: Some("Say exactly: Booked.".into()),
    })
    .unwrap();
    assert_eq!(
        conn.next().await,
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Say exactly: Booked."}]}],
                                 "turnComplete": true}})
    );
}

#[tokio::test]
async fn text_answers_come_as_text_parts_and_thoughts_are_not_words() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let mut session = GeminiLive::new(config(&server))
        .unwrap()
        .connect(setup(RealtimeModality::Text, false))
        .await
        .unwrap();
    let conn = server.conn().await;
    conn.send(&[
        json!({"serverContent": {"modelTurn": {"parts": [
            {"text": "The user wants the time.", "thought": true},
            {"text": "It is "}]}}}),
        json!({"serverContent": {"modelTurn": {"parts": [{"text": "noon."}]}, "turnComplete": true}}),
    ]);
    for want in [
        transcript(ChatRole::Assistant, "It is ", false),
        transcript(ChatRole::Assistant, "noon.", false),
        transcript(ChatRole::Assistant, "It is noon.", true),
        RealtimeEvent::ResponseDone,
    ] {
        assert_eq!(next_event(&mut session).await, want);
    }
}

#[tokio::test]
async fn cancel_interrupts_with_empty_client_content_and_drops_the_rest_of_the_turn() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, mut conn) = connected(&mut server).await;
    conn.send(&[audio(&[100; 240]), said("Once upon")]);
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::Assistant, "Once upon", false)
    );
    let c = session.commands.clone();
    c.send(RealtimeCommand::Cancel).unwrap();
    c.send(RealtimeCommand::Truncate {
        item_id: "gemini_turn_1".into(),
        played_ms: 300,
    })
    .unwrap();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::ResponseDone,
        "the turn ends at once"
    );
    assert_eq!(
        conn.next().await,
        json!({"clientContent": {"turnComplete": false}})
    );
    // What the cancelled turn still sends is dropped; the service confirms and may end it.
    conn.send(&[
        audio(&[100; 240]),
        said(" a time"),
        json!({"serverContent": {"interrupted": true}}),
        turn_complete(),
        audio(&[7]),
        turn_complete(),
    ]);
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Audio {
            item_id: "gemini_turn_2".into(),
            samples: samples(&[7]),
        }
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    // The truncation sent nothing (the next message is this one).
    c.send(RealtimeCommand::SendText("x".into())).unwrap();
    assert!(conn.next().await.get("clientContent").is_some());
}

#[tokio::test]
async fn an_interruption_by_the_service_itself_is_the_users_speech_and_ends_the_turn() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.send(&[
        audio(&[1; 10]),
        json!({"serverContent": {"interrupted": true}}),
        turn_complete(),
        heard("wait"),
        turn_complete(),
    ]);
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::UserSpeechStarted
    );
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::User, "wait", false)
    );
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::User, "wait", true)
    );
}

// ---- reconnects ------------------------------------------------------------------------------

#[tokio::test]
async fn a_hand_off_reconnects_with_the_new_setup_resuming_the_conversation() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, mut old) = connected(&mut server).await;
    old.send(&[
        json!({"sessionResumptionUpdate": {"newHandle": "handle-1", "resumable": true}}),
        json!({"sessionResumptionUpdate": {"newHandle": "", "resumable": false}}),
        heard("billing please"),
    ]);
    next_event(&mut session).await;
    session
        .commands
        .send(RealtimeCommand::UpdateSession {
            instructions: "You are billing.".into(),
            tools: vec![],
        })
        .unwrap();
    let mut new = server.conn().await;
    let s = new.next().await["setup"].clone();
    assert_eq!(
        s["systemInstruction"],
        json!({"parts": [{"text": "You are billing."}]})
    );
    assert!(s.get("tools").is_none());
    assert_eq!(
        s["sessionResumption"],
        json!({"handle": "handle-1"}),
        "the last resumable handle"
    );
    assert!(old.closed().await, "the old connection is closed");
    new.send(&[audio(&[3]), turn_complete()]);
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
}

#[tokio::test]
async fn go_away_reconnects_once_no_answer_is_due() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, old) = connected(&mut server).await;
    old.send(&[
        json!({"sessionResumptionUpdate": {"newHandle": "handle-9", "resumable": true}}),
        audio(&[1]),
        json!({"goAway": {"timeLeft": "10s"}}),
    ]);
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Audio { .. }
    ));
    // Still answering: no reconnect yet.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(server.conns.try_recv().is_err());
    old.send(&[turn_complete()]);
    assert_eq!(next_event(&mut session).await, RealtimeEvent::ResponseDone);
    let mut new = server.conn().await;
    assert_eq!(
        new.next().await["setup"]["sessionResumption"],
        json!({"handle": "handle-9"})
    );
    new.send(&[heard("hello")]);
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::User, "hello", false)
    );
}

// ---- errors ----------------------------------------------------------------------------------

#[tokio::test]
async fn refusals_at_the_handshake_or_the_setup_fail_the_connect_with_the_mapped_error() {
    let body = json!({"error": {"code": 403, "message": format!("API key {KEY} not valid"),
                                "status": "PERMISSION_DENIED"}})
    .to_string();
    for (setup, want) in [
        (Setup::Refuse(403, body.clone()), ProviderError::Auth),
        (
            Setup::Refuse(429, String::new()),
            ProviderError::RateLimited { retry_after: None },
        ),
        (
            Setup::Close(
                1008,
                "API key not valid. Please pass a valid API key.".into(),
            ),
            ProviderError::Auth,
        ),
        (
            Setup::Close(
                1008,
                "models/gemini-x is not found for API version v1beta, or is not supported for bidiGenerateContent.".into(),
            ),
            ProviderError::Protocol("closed by the service (1008): models/gemini-x is not found for API version v1beta, or is not supported for bidiGenerateContent.".into()),
        ),
        (
            Setup::Close(1007, "Request contains an invalid argument.".into()),
            ProviderError::Protocol(
                "closed by the service (1007): Request contains an invalid argument.".into(),
            ),
        ),
    ] {
        let server = LiveTestServer::start(setup).await;
        let e = GeminiLive::new(config(&server))
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
async fn a_close_mid_session_says_why_and_ends_the_events() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.close(1011, "You exceeded your current quota.");
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::RateLimited { retry_after: None })
    );
    assert!(session.events.recv().await.is_none());
}

#[tokio::test]
async fn malformed_messages_are_reported_and_skipped_and_text_frames_are_read_too() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.actions.send(Action::SendRaw(b"{oops")).unwrap();
    assert!(matches!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Protocol(m)) if m.starts_with("malformed message")
    ));
    conn.actions
        .send(Action::SendText(heard("still here")))
        .unwrap();
    assert_eq!(
        next_event(&mut session).await,
        transcript(ChatRole::User, "still here", false)
    );
}

#[tokio::test]
async fn a_connection_cut_is_an_error_and_the_end_of_the_events() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.actions.send(Action::Cut).unwrap();
    assert_eq!(
        next_event(&mut session).await,
        RealtimeEvent::Error(ProviderError::Unavailable("connection lost".into()))
    );
    assert!(session.events.recv().await.is_none());
}

/// On a paused clock with real sockets, time jumps to the next timer whenever every task
/// waits for the network: these tests await without timeouts of their own.
#[tokio::test(start_paused = true)]
async fn an_answer_asked_for_that_never_comes_times_out_and_is_interrupted() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let cfg = GeminiLiveConfig {
        response_timeout: Duration::from_secs(3),
        ..config(&server)
    };
    let (mut session, mut conn) = connected_with(&mut server, cfg).await;
    let since = Instant::now();
    session
        .commands
        .send(RealtimeCommand::CreateResponse { instructions: None })
        .unwrap();
    assert_eq!(
        session.events.recv().await.unwrap(),
        RealtimeEvent::Error(ProviderError::Timeout)
    );
    assert_eq!(since.elapsed(), Duration::from_secs(3));
    assert_eq!(
        session.events.recv().await.unwrap(),
        RealtimeEvent::ResponseDone
    );
    assert_eq!(
        conn.messages.recv().await.unwrap(),
        json!({"clientContent": {"turnComplete": true}})
    );
    assert_eq!(
        conn.messages.recv().await.unwrap(),
        json!({"clientContent": {"turnComplete": false}}),
        "the late answer is interrupted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_setup_never_completed_times_out() {
    let server = LiveTestServer::start(Setup::Silent).await;
    let provider = GeminiLive::new(GeminiLiveConfig {
        setup_timeout: Duration::from_secs(4),
        ..config(&server)
    })
    .unwrap();
    let start = Instant::now();
    assert_eq!(
        provider.connect(setup_audio()).await.err(),
        Some(ProviderError::Timeout)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

#[tokio::test]
async fn dropping_the_session_closes_the_connection() {
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (session, mut conn) = connected(&mut server).await;
    drop(session);
    assert!(conn.closed().await);
}

#[tokio::test]
async fn the_key_appears_in_no_error_debug_output_or_log_line() {
    let logs = Captured::default();
    let _guard = logs.install();

    let echo = format!("API key {KEY} is bad");
    let mut shown = Vec::new();
    let body = json!({"error": {"code": 400, "message": echo}}).to_string();
    for setup in [Setup::Refuse(400, body), Setup::Close(1007, echo.clone())] {
        let server = LiveTestServer::start(setup).await;
        let provider = GeminiLive::new(config(&server)).unwrap();
        shown.push(format!("{provider:?} {:?}", config(&server)));
        let e = provider.connect(setup_audio()).await.err().unwrap();
        shown.push(format!("{e} {e:?}"));
    }
    let mut server = LiveTestServer::start(Setup::Accept).await;
    let (mut session, conn) = connected(&mut server).await;
    conn.close(4001, &format!("model overloaded for {KEY}"));
    while let Some(e) = session.events.recv().await {
        shown.push(format!("{e:?}"));
    }
    assert!(
        shown.iter().any(|s| s.contains("model overloaded for ***")),
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
