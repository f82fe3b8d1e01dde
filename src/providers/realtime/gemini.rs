//! Google's Gemini Live API (`BidiGenerateContent` over WebSocket), with the key in the
//! `x-goog-api-key` header as Google's own SDK sends it, so it is never part of a URL.
//!
//! The first message is `setup` (model, response modality and voice, system instruction,
//! function declarations, transcription of both sides, automatic activity detection with
//! `activityHandling: NO_INTERRUPTION` so the model never cuts its own answer (the session
//! decides barge-in), session resumption and a sliding context window); the connect waits for
//! `setupComplete`. Microphone audio goes as `realtimeInput.audio` (PCM16 at 16 kHz), user
//! text and turns as `clientContent`, tool results as `toolResponse`. The model's speech
//! arrives as inline PCM16 at 24 kHz in `serverContent.modelTurn`, its words in
//! `outputTranscription` (or text parts when it answers in text), the user's words in
//! `inputTranscription`; `turnComplete` ends a response.
//!
//! Where the protocol differs from the trait (see [`super`]'s table):
//! - a setup cannot change: [`RealtimeCommand::UpdateSession`] reconnects with the new one,
//!   resuming the conversation with the last resumable handle the service gave (without one
//!   the new connection starts without the conversation so far, which is logged);
//! - `goAway` (the service will close soon) reconnects the same way as soon as no response is
//!   due, so a long call survives the service's connection limits;
//! - [`RealtimeCommand::Cancel`] sends an empty `clientContent` (any client content interrupts
//!   the generation in progress) and drops what the cancelled turn still sends until
//!   `interrupted` or `turnComplete` says it is over;
//! - [`RealtimeCommand::Truncate`] has nothing to send: the service keeps no audio items;
//! - the service answers tool results by itself, so a [`RealtimeCommand::CreateResponse`]
//!   without instructions right after tool outputs is that answer and sends nothing. Outputs
//!   are held until every call of the `toolCall` is answered and go out in one `toolResponse`;
//! - a tool call ends the response (the model waits for the results); the `turnComplete` some
//!   models send after it is not a second end;
//! - the user's transcript is final at the end of the model's turn (the service sends input
//!   transcription in pieces, in no guaranteed order with the rest).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{
    assistant, decode_audio, encode_audio, stream_error, user, websocket_url, AudioQueue,
    QueuedInput,
};
use super::{
    Realtime, RealtimeCommand, RealtimeEvent, RealtimeModality, RealtimeSession, RealtimeSetup,
};
use crate::agent::schema::gemini_function_declaration;
use crate::providers::http::{shorten, ApiKey};
use crate::providers::sleep_until;
use crate::providers::ws::{self, CloseFrame, Message, WsStream};
use crate::providers::{ProviderError, ToolCallRequest};

/// Google's endpoint, the default URL.
pub const DEFAULT_URL: &str = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
/// The voice when none is configured.
pub const DEFAULT_VOICE: &str = "Puck";
/// The rate the service takes audio at.
const IN_RATE: u32 = 16_000;
/// The rate of the audio it produces.
const OUT_RATE: u32 = 24_000;
/// Events buffered between the connection's task and the session.
const EVENTS: usize = 256;
/// Microphone audio held while the network is slow (or a reconnect runs) before new audio is
/// dropped.
const QUEUE_SECONDS: usize = 2;

/// How to reach Gemini Live and how the model should sound.
#[derive(Debug, Clone)]
pub struct GeminiLiveConfig {
    /// The `BidiGenerateContent` WebSocket endpoint.
    pub url: String,
    /// The model (`models/` is added when missing).
    pub model: String,
    /// A prebuilt voice (`Puck`, `Kore`, `Charon`…).
    pub voice: String,
    /// Sent as `x-goog-api-key` when set and not empty.
    pub api_key: Option<ApiKey>,
    /// Longest wait for the TCP, TLS and WebSocket handshakes.
    pub connect_timeout: Duration,
    /// Longest wait, once connected, for `setupComplete`.
    pub setup_timeout: Duration,
    /// Longest silence while a response is due before it is given up.
    pub response_timeout: Duration,
}

impl GeminiLiveConfig {
    /// Google's endpoint with `model`, no key, the default voice and the default timeouts
    /// (connect 5 s, setup 10 s, response 15 s).
    pub fn new(model: impl Into<String>) -> Self {
        GeminiLiveConfig {
            url: DEFAULT_URL.to_owned(),
            model: model.into(),
            voice: DEFAULT_VOICE.to_owned(),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(15),
        }
    }
}

/// Why the provider could not be built from its config. Messages hold no key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeminiLiveError {
    /// `url` does not parse or is not ws(s).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The key holds characters a header cannot carry (the key is not shown).
    #[error("the API key holds characters that cannot be sent in a header")]
    InvalidKey,
}

/// Checks the URL and key of `config` without connecting, so a config file can be validated
/// when it is loaded.
pub fn check(config: &GeminiLiveConfig) -> Result<(), GeminiLiveError> {
    GeminiLive::new(config.clone()).map(drop)
}

/// What opening a connection needs; the connection's task keeps it to reconnect.
#[derive(Debug, Clone)]
struct Dialer {
    url: String,
    model: String,
    voice: String,
    key: Option<ApiKey>,
    connect_timeout: Duration,
    setup_timeout: Duration,
}

/// Gemini Live as a [`Realtime`] model. Cheap to share: one per configured provider, one
/// connection per session.
#[derive(Debug)]
pub struct GeminiLive {
    dialer: Dialer,
    response_timeout: Duration,
}

impl GeminiLive {
    /// Checks the config and builds the provider.
    pub fn new(config: GeminiLiveConfig) -> Result<Self, GeminiLiveError> {
        let url = websocket_url(&config.url).map_err(GeminiLiveError::InvalidUrl)?;
        let key = config.api_key.filter(|k| !k.is_empty());
        if let Some(k) = &key {
            tokio_tungstenite::tungstenite::http::HeaderValue::from_str(k.expose())
                .map_err(|_| GeminiLiveError::InvalidKey)?;
        }
        let model = if config.model.starts_with("models/") {
            config.model
        } else {
            format!("models/{}", config.model)
        };
        Ok(GeminiLive {
            dialer: Dialer {
                url: url.into(),
                model,
                voice: config.voice,
                key,
                connect_timeout: config.connect_timeout,
                setup_timeout: config.setup_timeout,
            },
            response_timeout: config.response_timeout,
        })
    }

    /// The `setup` message for `setup`, resuming the session `handle` names if given.
    pub fn setup_message(&self, setup: &RealtimeSetup, handle: Option<&str>) -> Value {
        self.dialer.setup_message(setup, handle)
    }
}

impl Dialer {
    fn setup_message(&self, setup: &RealtimeSetup, handle: Option<&str>) -> Value {
        let mut s = json!({"model": self.model});
        let modality = match setup.modality {
            RealtimeModality::Audio => "AUDIO",
            RealtimeModality::Text => "TEXT",
        };
        s["generationConfig"] = json!({ "responseModalities": [modality] });
        if setup.modality == RealtimeModality::Audio {
            s["generationConfig"]["speechConfig"] =
                json!({"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.voice}}});
        }
        if !setup.instructions.is_empty() {
            s["systemInstruction"] = json!({"parts": [{"text": setup.instructions}]});
        }
        if !setup.tools.is_empty() {
            let declarations: Vec<Value> = setup
                .tools
                .iter()
                .map(gemini_function_declaration)
                .collect();
            s["tools"] = json!([{ "functionDeclarations": declarations }]);
        }
        s["realtimeInputConfig"] = json!({
            "automaticActivityDetection": {"disabled": !setup.audio_input},
            "activityHandling": "NO_INTERRUPTION",
        });
        if setup.audio_input {
            s["inputAudioTranscription"] = json!({});
        }
        if setup.modality == RealtimeModality::Audio {
            s["outputAudioTranscription"] = json!({});
        }
        s["sessionResumption"] = match handle {
            Some(h) => json!({ "handle": h }),
            None => json!({}),
        };
        s["contextWindowCompression"] = json!({"slidingWindow": {}});
        json!({ "setup": s })
    }

    /// Connects, sends the setup and waits for `setupComplete`.
    async fn open(
        &self,
        setup: &RealtimeSetup,
        handle: Option<&str>,
    ) -> Result<WsStream, ProviderError> {
        let headers: Vec<(&str, &str)> = self
            .key
            .as_ref()
            .map(|k| ("x-goog-api-key", k.expose()))
            .into_iter()
            .collect();
        let mut socket =
            ws::connect(&self.url, &headers, self.key.as_ref(), self.connect_timeout).await?;
        let message = self.setup_message(setup, handle).to_string();
        socket
            .send(Message::text(message))
            .await
            .map_err(|e| stream_error(e, self.key.as_ref()))?;
        let deadline = Instant::now() + self.setup_timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, socket.next())
                .await
                .map_err(|_| ProviderError::Timeout)?;
            let msg = match msg {
                None => return Err(ProviderError::Unavailable("closed during setup".into())),
                Some(Err(e)) => return Err(stream_error(e, self.key.as_ref())),
                Some(Ok(m)) => m,
            };
            let bytes = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b.as_ref(),
                Message::Close(frame) => {
                    return Err(close_error(frame.as_ref(), self.key.as_ref())
                        .unwrap_or(ProviderError::Unavailable("closed during setup".into())))
                }
                _ => continue,
            };
            let m: ServerMessage = serde_json::from_slice(bytes).map_err(|e| {
                ProviderError::Protocol(format!("malformed message during setup: {e}"))
            })?;
            if m.setup_complete.is_some() {
                return Ok(socket);
            }
        }
    }
}

#[async_trait]
impl Realtime for GeminiLive {
    fn label(&self) -> &str {
        "gemini"
    }

    fn input_rate(&self) -> u32 {
        IN_RATE
    }

    fn output_rate(&self) -> u32 {
        OUT_RATE
    }

    async fn connect(&self, setup: RealtimeSetup) -> Result<RealtimeSession, ProviderError> {
        let socket = self.dialer.open(&setup, None).await?;
        tracing::debug!(
            provider = "gemini",
            tools = setup.tools.len(),
            modality = ?setup.modality,
            audio_input = setup.audio_input,
            "realtime session set up"
        );
        let queue = AudioQueue::new(IN_RATE as usize * QUEUE_SECONDS);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(EVENTS);
        let task = Connection {
            dialer: self.dialer.clone(),
            setup,
            ws: socket,
            events: event_tx,
            pcm: queue.spare(),
            queue: queue.clone(),
            scratch: Vec::new(),
            response_timeout: self.response_timeout,
            handle: None,
            go_away: false,
            pending: 0,
            active: false,
            turns: 0,
            cancelling: false,
            stray: 0,
            open_calls: Vec::new(),
            outputs: Vec::new(),
            tool_answered: false,
            user_text: String::new(),
            model_text: String::new(),
            model_pieces: false,
            deadline: None,
        };
        tokio::spawn(task.run(command_rx));
        Ok(RealtimeSession {
            input: Box::new(QueuedInput(queue)),
            commands,
            events,
        })
    }
}

/// The error a close frame from the service means. Gemini closes with 1008 for a bad key but
/// also for an unknown model, and with 1011 when a quota is used up, so the reason decides.
fn close_error(frame: Option<&CloseFrame>, key: Option<&ApiKey>) -> Option<ProviderError> {
    let f = frame?;
    let code = u16::from(f.code);
    if matches!(code, 1000 | 1001) {
        return None;
    }
    let reason = shorten(&match key {
        Some(k) => k.redact(f.reason.as_str()),
        None => f.reason.to_string(),
    });
    let lower = reason.to_ascii_lowercase();
    if lower.contains("api key")
        || lower.contains("unauthenticated")
        || lower.contains("permission")
    {
        Some(ProviderError::Auth)
    } else if lower.contains("quota")
        || lower.contains("resource_exhausted")
        || lower.contains("rate limit")
    {
        Some(ProviderError::RateLimited { retry_after: None })
    } else if code == 1008 {
        Some(ProviderError::Protocol(format!(
            "closed by the service ({code}): {reason}"
        )))
    } else {
        ws::close_error(frame, key)
    }
}

// ---- server messages (the fields hark reads) -------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerMessage<'a> {
    #[serde(default)]
    setup_complete: Option<IgnoredAny>,
    #[serde(default, borrow)]
    server_content: Option<ServerContent<'a>>,
    #[serde(default)]
    tool_call: Option<ToolCallMessage>,
    #[serde(default)]
    tool_call_cancellation: Option<ToolCallCancellation>,
    #[serde(default)]
    go_away: Option<GoAway>,
    #[serde(default)]
    session_resumption_update: Option<ResumptionUpdate>,
    #[serde(default)]
    usage_metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerContent<'a> {
    #[serde(default, borrow)]
    model_turn: Option<Content<'a>>,
    #[serde(default)]
    turn_complete: bool,
    #[serde(default)]
    interrupted: bool,
    #[serde(default)]
    input_transcription: Option<Transcription>,
    #[serde(default)]
    output_transcription: Option<Transcription>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(default, borrow)]
    inline_data: Option<Blob<'a>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(default)]
    mime_type: String,
}

#[derive(Deserialize)]
struct Transcription {
    #[serde(default)]
    text: String,
    #[serde(default)]
    finished: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolCallMessage {
    #[serde(default)]
    function_calls: Vec<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Deserialize)]
struct ToolCallCancellation {
    #[serde(default)]
    ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoAway {
    #[serde(default)]
    time_left: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumptionUpdate {
    #[serde(default)]
    new_handle: String,
    #[serde(default)]
    resumable: bool,
}

// ---- the connection's task ---------------------------------------------------------------

/// The connection's task has stopped (the session dropped its side, or the connection is gone
/// and that was reported).
struct Stop;

/// The task that owns one session's connection (and its successors after a reconnect).
struct Connection {
    dialer: Dialer,
    /// The setup in force (a hand-off changes it).
    setup: RealtimeSetup,
    ws: WsStream,
    events: mpsc::Sender<RealtimeEvent>,
    queue: Arc<AudioQueue>,
    /// The buffer swapped with the queue's.
    pcm: Vec<u8>,
    /// Decoded base64 of the last audio chunk.
    scratch: Vec<u8>,
    response_timeout: Duration,
    /// The last resumable session handle.
    handle: Option<String>,
    /// The service announced it will close: reconnect once no response is due.
    go_away: bool,
    /// Turns asked for (or an answer to tool results) whose output has not begun.
    pending: usize,
    /// A model turn is being passed on.
    active: bool,
    /// Model turns seen (their audio's item ids).
    turns: u64,
    /// A cancelled turn's output is being dropped until the service says it stopped.
    cancelling: bool,
    /// `turnComplete`s that may follow an ending already reported (after a tool call or an
    /// interruption), ignored when no turn is running.
    stray: usize,
    /// Calls of the last `toolCall` not answered yet.
    open_calls: Vec<String>,
    /// Function responses held until every open call is answered.
    outputs: Vec<Value>,
    /// Tool results just went out: the service answers them by itself.
    tool_answered: bool,
    /// The user's words since their transcript was last made final.
    user_text: String,
    /// The model's words in the current turn.
    model_text: String,
    /// Whether pieces of the model's words were passed on in this turn.
    model_pieces: bool,
    /// When the response due (or a cancellation) times out.
    deadline: Option<Instant>,
}

impl Connection {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<RealtimeCommand>) {
        loop {
            let deadline = self.deadline;
            // Biased: microphone audio first, then commands, so what the session pushed and
            // asked goes out in the order it did so.
            let step = tokio::select! {
                biased;
                _ = self.queue.ready() => self.send_audio().await,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => Err(Stop),
                },
                msg = self.ws.next() => self.message(msg).await,
                _ = sleep_until(deadline) => self.timed_out().await,
            };
            if step.is_err() {
                break;
            }
            if self.go_away && self.idle() && self.reconnect().await.is_err() {
                break;
            }
            self.rearm();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    fn idle(&self) -> bool {
        !self.active && self.pending == 0 && !self.cancelling
    }

    /// Arms the timeout while something is due, and disarms it when nothing is.
    fn rearm(&mut self) {
        if self.idle() {
            self.deadline = None;
        } else if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.response_timeout);
        }
    }

    async fn emit(&mut self, event: RealtimeEvent) -> Result<(), Stop> {
        self.events.send(event).await.map_err(|_| Stop)
    }

    async fn send(&mut self, message: Value) -> Result<(), Stop> {
        self.send_text(message.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), Stop> {
        if let Err(e) = self.ws.send(Message::text(text)).await {
            let e = stream_error(e, self.dialer.key.as_ref());
            let _ = self.emit(RealtimeEvent::Error(e)).await;
            return Err(Stop);
        }
        Ok(())
    }

    // ---- commands ----------------------------------------------------------------------

    async fn command(&mut self, cmd: RealtimeCommand) -> Result<(), Stop> {
        let after_tools = std::mem::take(&mut self.tool_answered);
        match cmd {
            RealtimeCommand::UpdateSession {
                instructions,
                tools,
            } => {
                self.flush_outputs().await?;
                self.setup.instructions = instructions;
                self.setup.tools = tools;
                self.reconnect().await
            }
            RealtimeCommand::SendText(text) => {
                self.send(json!({"clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": text}]}],
                    "turnComplete": false,
                }}))
                .await
            }
            RealtimeCommand::CreateResponse { instructions } => {
                let held = !self.outputs.is_empty();
                self.flush_outputs().await?;
                if instructions.is_none() && (after_tools || held) {
                    // The service continues after tool results by itself: that is the answer.
                    self.pending += 1;
                    return Ok(());
                }
                let mut content = json!({ "turnComplete": true });
                if let Some(i) = instructions {
                    // No per-response instructions here: they go as a user turn.
                    content["turns"] = json!([{"role": "user", "parts": [{"text": i}]}]);
                }
                self.pending += 1;
                self.send(json!({ "clientContent": content })).await
            }
            RealtimeCommand::ToolOutput {
                call_id,
                name,
                output,
                is_error,
            } => {
                let response = if is_error {
                    json!({ "error": output })
                } else {
                    json!({ "output": output })
                };
                self.outputs
                    .push(json!({"id": call_id, "name": name, "response": response}));
                self.open_calls.retain(|c| *c != call_id);
                if self.open_calls.is_empty() {
                    self.flush_outputs().await?;
                }
                Ok(())
            }
            RealtimeCommand::Cancel => self.cancel().await,
            RealtimeCommand::Truncate { item_id, played_ms } => {
                tracing::debug!(
                    provider = "gemini",
                    item_id,
                    played_ms,
                    "truncation has no Gemini equivalent"
                );
                Ok(())
            }
        }
    }

    /// Sends the held function responses in one `toolResponse`.
    async fn flush_outputs(&mut self) -> Result<(), Stop> {
        if self.outputs.is_empty() {
            return Ok(());
        }
        let responses = std::mem::take(&mut self.outputs);
        self.open_calls.clear();
        self.tool_answered = true;
        self.send(json!({"toolResponse": {"functionResponses": responses}}))
            .await
    }

    /// Ends the turns due at once and has the service stop generating.
    async fn cancel(&mut self) -> Result<(), Stop> {
        if !self.active && self.pending == 0 {
            return Ok(());
        }
        let due = usize::from(self.active) + self.pending;
        self.active = false;
        self.pending = 0;
        self.model_text.clear();
        self.model_pieces = false;
        for _ in 0..due {
            self.emit(RealtimeEvent::ResponseDone).await?;
        }
        self.cancelling = true;
        self.deadline = None;
        // Any client content interrupts the generation in progress; an empty one adds nothing
        // to the conversation and starts no new turn.
        self.send(json!({"clientContent": {"turnComplete": false}}))
            .await
    }

    /// Opens a new connection with the current setup, resuming the conversation if a handle is
    /// known. What the old one still owed ends here.
    async fn reconnect(&mut self) -> Result<(), Stop> {
        let due = usize::from(self.active) + self.pending;
        for _ in 0..due {
            self.emit(RealtimeEvent::ResponseDone).await?;
        }
        self.active = false;
        self.pending = 0;
        self.cancelling = false;
        self.stray = 0;
        self.open_calls.clear();
        self.outputs.clear();
        self.tool_answered = false;
        self.model_text.clear();
        self.model_pieces = false;
        self.go_away = false;
        self.deadline = None;
        if self.handle.is_none() {
            tracing::warn!(
                provider = "gemini",
                "reconnecting without a resumable session: the conversation so far is not carried over"
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), self.ws.close(None)).await;
        match self.dialer.open(&self.setup, self.handle.as_deref()).await {
            Ok(socket) => {
                self.ws = socket;
                tracing::info!(
                    provider = "gemini",
                    resumed = self.handle.is_some(),
                    "realtime session reconnected"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(provider = "gemini", error = %e, "realtime reconnect failed");
                let _ = self.emit(RealtimeEvent::Error(e)).await;
                Err(Stop)
            }
        }
    }

    // ---- audio -------------------------------------------------------------------------

    async fn send_audio(&mut self) -> Result<(), Stop> {
        let dropped = self.queue.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                provider = "gemini",
                samples = dropped,
                "realtime input behind: microphone audio dropped"
            );
        }
        while self.queue.take(&mut self.pcm) {
            const HEAD: &str =
                r#"{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":""#;
            let mut text = String::with_capacity(HEAD.len() + self.pcm.len() * 4 / 3 + 8);
            text.push_str(HEAD);
            encode_audio(&self.pcm, &mut text);
            text.push_str("\"}}}");
            self.pcm.clear();
            self.send_text(text).await?;
        }
        Ok(())
    }

    // ---- server messages ---------------------------------------------------------------

    async fn message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Stop> {
        let msg = match msg {
            None => {
                return self
                    .lost(ProviderError::Unavailable("connection lost".into()))
                    .await
            }
            Some(Err(e)) => {
                let e = stream_error(e, self.dialer.key.as_ref());
                return self.lost(e).await;
            }
            Some(Ok(m)) => m,
        };
        let bytes = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b.as_ref(),
            Message::Close(frame) => {
                if self.go_away {
                    // The service closed as announced: carry on on a new connection.
                    return self.reconnect().await;
                }
                if let Some(e) = close_error(frame.as_ref(), self.dialer.key.as_ref()) {
                    let _ = self.emit(RealtimeEvent::Error(e)).await;
                }
                return Err(Stop);
            }
            _ => return Ok(()),
        };
        let m: ServerMessage = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(provider = "gemini", error = %e, "malformed realtime message ignored");
                let e = ProviderError::Protocol(format!("malformed message: {e}"));
                return self.emit(RealtimeEvent::Error(e)).await;
            }
        };
        if let Some(update) = m.session_resumption_update {
            if update.resumable && !update.new_handle.is_empty() {
                self.handle = Some(update.new_handle);
            }
        }
        if let Some(usage) = m.usage_metadata {
            tracing::debug!(provider = "gemini", %usage, "realtime usage");
        }
        if let Some(content) = m.server_content {
            self.content(content).await?;
        }
        if let Some(call) = m.tool_call {
            self.tool_call(call).await?;
        }
        if let Some(c) = m.tool_call_cancellation {
            tracing::debug!(provider = "gemini", ids = ?c.ids, "tool calls cancelled by the service");
            self.open_calls.retain(|id| !c.ids.contains(id));
            self.outputs.retain(|o| {
                !c.ids
                    .iter()
                    .any(|id| o.get("id").and_then(Value::as_str) == Some(id))
            });
            if self.open_calls.is_empty() {
                self.flush_outputs().await?;
            }
        }
        if let Some(g) = m.go_away {
            tracing::info!(
                provider = "gemini",
                time_left = g.time_left.as_deref().unwrap_or("?"),
                "the service will close the connection; reconnecting when idle"
            );
            self.go_away = true;
        }
        Ok(())
    }

    /// The connection failed without an announced close.
    async fn lost(&mut self, error: ProviderError) -> Result<(), Stop> {
        if self.go_away {
            return self.reconnect().await;
        }
        let _ = self.emit(RealtimeEvent::Error(error)).await;
        Err(Stop)
    }

    /// The model's output begins a turn if none is running; `false` while a cancelled turn's
    /// output is being dropped.
    fn begin(&mut self) -> bool {
        if self.cancelling {
            return false;
        }
        if !self.active {
            self.active = true;
            self.stray = 0;
            self.pending = self.pending.saturating_sub(1);
            self.turns += 1;
            self.model_text.clear();
            self.model_pieces = false;
        }
        self.deadline = Some(Instant::now() + self.response_timeout);
        true
    }

    async fn content(&mut self, c: ServerContent<'_>) -> Result<(), Stop> {
        if let Some(t) = c.input_transcription {
            if !t.text.is_empty() {
                self.user_text.push_str(&t.text);
                self.emit(user(t.text, false)).await?;
            }
            if t.finished {
                self.user_final().await?;
            }
        }
        if let Some(turn) = c.model_turn {
            for part in turn.parts {
                if let Some(blob) = part.inline_data {
                    if !blob.mime_type.starts_with("audio/pcm") {
                        continue;
                    }
                    if !self.begin() {
                        continue;
                    }
                    if !blob.mime_type.is_empty() && !blob.mime_type.contains("rate=24000") {
                        tracing::warn!(
                            provider = "gemini",
                            mime = %blob.mime_type,
                            "audio at an unexpected rate"
                        );
                    }
                    match decode_audio(&blob.data, &mut self.scratch) {
                        Ok(samples) => {
                            let item_id = format!("gemini_turn_{}", self.turns);
                            self.emit(RealtimeEvent::Audio { item_id, samples }).await?;
                        }
                        Err(e) => {
                            tracing::warn!(provider = "gemini", error = %e, "bad audio ignored");
                            self.emit(RealtimeEvent::Error(e)).await?;
                        }
                    }
                } else if let Some(text) = part.text {
                    // In audio mode the words come as output transcription; text parts are
                    // the model's thoughts or duplicates.
                    if part.thought || self.setup.modality != RealtimeModality::Text {
                        continue;
                    }
                    if self.begin() {
                        self.model_said(text).await?;
                    }
                }
            }
        }
        if let Some(t) = c.output_transcription {
            if !t.text.is_empty() && self.setup.modality == RealtimeModality::Audio && self.begin()
            {
                self.model_said(t.text).await?;
            }
        }
        if c.interrupted {
            self.interrupted().await?;
        }
        if c.turn_complete {
            self.turn_complete().await?;
        }
        Ok(())
    }

    async fn model_said(&mut self, text: String) -> Result<(), Stop> {
        self.model_text.push_str(&text);
        self.model_pieces = true;
        self.emit(assistant(text, false)).await
    }

    async fn user_final(&mut self) -> Result<(), Stop> {
        let text = std::mem::take(&mut self.user_text);
        if text.trim().is_empty() {
            return Ok(());
        }
        self.emit(user(text, true)).await
    }

    /// The running turn is over: the words' final form, then its end.
    async fn finish_turn(&mut self) -> Result<(), Stop> {
        self.active = false;
        if std::mem::take(&mut self.model_pieces) {
            let text = std::mem::take(&mut self.model_text);
            self.emit(assistant(text, true)).await?;
        }
        self.emit(RealtimeEvent::ResponseDone).await
    }

    async fn interrupted(&mut self) -> Result<(), Stop> {
        if self.cancelling {
            // Our cancel took effect.
            self.cancelling = false;
            self.stray += 1;
            return Ok(());
        }
        // The service cut its answer on hearing the user (it was asked not to).
        self.emit(RealtimeEvent::UserSpeechStarted).await?;
        if self.active {
            self.stray += 1;
            self.finish_turn().await?;
        }
        Ok(())
    }

    async fn turn_complete(&mut self) -> Result<(), Stop> {
        if self.cancelling {
            // The cancelled turn ended before the cancel reached the service.
            self.cancelling = false;
            return Ok(());
        }
        self.user_final().await?;
        if self.active {
            return self.finish_turn().await;
        }
        if self.stray > 0 {
            self.stray -= 1;
            return Ok(());
        }
        if self.pending > 0 {
            // A turn asked for ended without output.
            self.pending -= 1;
            return self.emit(RealtimeEvent::ResponseDone).await;
        }
        Ok(())
    }

    async fn tool_call(&mut self, call: ToolCallMessage) -> Result<(), Stop> {
        if !self.begin() {
            tracing::debug!(provider = "gemini", "tool call of a cancelled turn dropped");
            return Ok(());
        }
        for f in call.function_calls {
            let call_id = f
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("gemini_call_{}_{}", self.turns, self.open_calls.len()));
            self.open_calls.push(call_id.clone());
            let arguments = if f.args.is_null() {
                "{}".to_owned()
            } else {
                f.args.to_string()
            };
            self.emit(RealtimeEvent::ToolCall(ToolCallRequest {
                call_id,
                name: f.name,
                arguments,
            }))
            .await?;
        }
        // The model waits for the results: its response is over. A `turnComplete` may follow.
        self.stray += 1;
        self.finish_turn().await
    }

    /// The response due has been silent too long (or a cancellation was never confirmed).
    async fn timed_out(&mut self) -> Result<(), Stop> {
        self.deadline = None;
        if !self.active && self.pending == 0 {
            // A cancellation the service never confirmed: stop dropping output.
            self.cancelling = false;
            return Ok(());
        }
        tracing::warn!(provider = "gemini", "realtime response timed out");
        self.emit(RealtimeEvent::Error(ProviderError::Timeout))
            .await?;
        self.cancel().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(code: u16, reason: &'static str) -> CloseFrame {
        CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn close_reasons_decide_what_a_close_means() {
        let key = ApiKey::new("AIza-k");
        let e = |code, reason| close_error(Some(&frame(code, reason)), Some(&key));
        assert_eq!(
            e(1008, "API key not valid. Please pass a valid API key."),
            Some(ProviderError::Auth)
        );
        assert_eq!(
            e(1011, "You exceeded your current quota"),
            Some(ProviderError::RateLimited { retry_after: None })
        );
        assert_eq!(
            e(1008, "models/x is not found for API version v1beta AIza-k"),
            Some(ProviderError::Protocol(
                "closed by the service (1008): models/x is not found for API version v1beta ***"
                    .into()
            ))
        );
        assert!(matches!(
            e(1011, "Internal error"),
            Some(ProviderError::Unavailable(_))
        ));
        assert_eq!(e(1000, ""), None);
    }

    #[test]
    fn models_get_their_prefix_and_only_ws_urls_are_accepted() {
        let p = GeminiLive::new(GeminiLiveConfig::new("gemini-live-2.5-flash-preview")).unwrap();
        assert_eq!(p.dialer.model, "models/gemini-live-2.5-flash-preview");
        let p = GeminiLive::new(GeminiLiveConfig::new("models/m")).unwrap();
        assert_eq!(p.dialer.model, "models/m");
        let bad = GeminiLiveConfig {
            url: "http://localhost/x".into(),
            ..GeminiLiveConfig::new("m")
        };
        assert!(matches!(
            GeminiLive::new(bad),
            Err(GeminiLiveError::InvalidUrl(_))
        ));
    }
}
