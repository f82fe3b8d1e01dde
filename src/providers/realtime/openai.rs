//! OpenAI's Realtime API over WebSocket: `wss://api.openai.com/v1/realtime?model=…` with
//! `Authorization: Bearer <key>`, speaking the GA interface (no `OpenAI-Beta` header, which
//! would select the deprecated beta one). Server events are accepted under their beta names
//! too (`response.audio.delta`, `response.text.delta`…), so a proxy or a LAN server still on
//! the beta names works.
//!
//! Connecting sends `session.update` (instructions, voice, tools in the flat Realtime format,
//! output modality, PCM16 at 24 kHz both ways, input transcription, and server VAD with
//! `create_response: true` and `interrupt_response: false`: the model answers when the user
//! stops, but never cuts its own answer; the session decides barge-in) and waits for
//! `session.updated`, so a refused configuration fails the connect. One task then owns the
//! socket: it sends the queued microphone audio (`input_audio_buffer.append`), turns commands
//! into client events and server events into [`RealtimeEvent`]s.
//!
//! Response bookkeeping, so that every response ends with exactly one
//! [`RealtimeEvent::ResponseDone`] as the session counts on:
//! - the service runs one response at a time and refuses `response.create` while one is
//!   active, so a `CreateResponse` arriving then waits here until `response.done` (a
//!   `say()` right after a barge-in: cancel, then create);
//! - tool calls are held until `response.done` and passed on only if the response completed
//!   (a cancelled or truncated response may carry half-written arguments);
//! - a `response.create` the service refuses ends with an error and a `ResponseDone`; refused
//!   because the service's own turn detection started a response at the same moment, it is
//!   served by that response; a `response.cancel` that came too late is no error;
//! - a response the service started by itself and that produced nothing before it ended
//!   (cancelled at once) is not reported: the session never saw it start;
//! - a response that is due but silent for the response timeout ends with
//!   [`ProviderError::Timeout`] and a `ResponseDone`, is cancelled, and its late events are
//!   dropped.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
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
use crate::agent::schema::openai_realtime_tool;
use crate::agent::ToolSpec;
use crate::providers::http::{shorten, ApiKey};
use crate::providers::sleep_until;
use crate::providers::ws::{self, Message, WsStream};
use crate::providers::{ProviderError, ToolCallRequest};

/// OpenAI's endpoint, the default URL (the model goes in the `model` query parameter).
pub const DEFAULT_URL: &str = "wss://api.openai.com/v1/realtime";
/// The voice when none is configured (one of the two OpenAI recommends for `gpt-realtime`).
pub const DEFAULT_VOICE: &str = "marin";
/// The model that transcribes the user's speech when none is configured.
pub const DEFAULT_TRANSCRIPTION_MODEL: &str = "gpt-4o-mini-transcribe";
/// The only PCM rate the API accepts and produces.
const RATE: u32 = 24_000;
/// Events buffered between the connection's task and the session.
const EVENTS: usize = 256;
/// Microphone audio held while the network is slow before new audio is dropped.
const QUEUE_SECONDS: usize = 2;

/// How to reach the Realtime API and how the model should sound.
#[derive(Debug, Clone)]
pub struct OpenAiRealtimeConfig {
    /// The WebSocket endpoint without the model (e.g. a proxy's `wss://…/v1/realtime`).
    pub url: String,
    /// The model, sent as the `model` query parameter.
    pub model: String,
    /// The voice (`marin`, `cedar`, `alloy`…); it cannot change once the model has spoken.
    pub voice: String,
    /// Sent as `Authorization: Bearer …` when set and not empty.
    pub api_key: Option<ApiKey>,
    /// The model that transcribes the user's speech (the session keeps the user's words in
    /// its chat context); none: no input transcription.
    pub transcription_model: Option<String>,
    /// Longest wait for the TCP, TLS and WebSocket handshakes.
    pub connect_timeout: Duration,
    /// Longest wait, once connected, for the service to accept the session configuration.
    pub setup_timeout: Duration,
    /// Longest silence while a response is due before it is given up.
    pub response_timeout: Duration,
}

impl OpenAiRealtimeConfig {
    /// OpenAI's endpoint with `model`, no key, the default voice and transcription model, and
    /// the default timeouts (connect 5 s, setup 10 s, response 15 s).
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiRealtimeConfig {
            url: DEFAULT_URL.to_owned(),
            model: model.into(),
            voice: DEFAULT_VOICE.to_owned(),
            api_key: None,
            transcription_model: Some(DEFAULT_TRANSCRIPTION_MODEL.to_owned()),
            connect_timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(15),
        }
    }
}

/// Why the provider could not be built from its config. Messages hold no key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenAiRealtimeError {
    /// `url` does not parse or is not ws(s).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The key holds characters a header cannot carry (the key is not shown).
    #[error("the API key holds characters that cannot be sent in a header")]
    InvalidKey,
}

/// The OpenAI Realtime API as a [`Realtime`] model. Cheap to share: one per configured
/// provider, one connection per session.
#[derive(Debug)]
pub struct OpenAiRealtime {
    url: String,
    voice: String,
    key: Option<ApiKey>,
    transcription_model: Option<String>,
    connect_timeout: Duration,
    setup_timeout: Duration,
    response_timeout: Duration,
}

/// Checks the URL and key of `config` without connecting, so a config file can be validated
/// when it is loaded.
pub fn check(config: &OpenAiRealtimeConfig) -> Result<(), OpenAiRealtimeError> {
    OpenAiRealtime::new(config.clone()).map(drop)
}

impl OpenAiRealtime {
    /// Checks the config and builds the provider.
    pub fn new(config: OpenAiRealtimeConfig) -> Result<Self, OpenAiRealtimeError> {
        let mut url = websocket_url(&config.url).map_err(OpenAiRealtimeError::InvalidUrl)?;
        url.query_pairs_mut().append_pair("model", &config.model);
        let key = config.api_key.filter(|k| !k.is_empty());
        if let Some(k) = &key {
            tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&format!(
                "Bearer {}",
                k.expose()
            ))
            .map_err(|_| OpenAiRealtimeError::InvalidKey)?;
        }
        Ok(OpenAiRealtime {
            url: url.into(),
            voice: config.voice,
            key,
            transcription_model: config.transcription_model,
            connect_timeout: config.connect_timeout,
            setup_timeout: config.setup_timeout,
            response_timeout: config.response_timeout,
        })
    }

    /// The `session` object of the first `session.update` for `setup`.
    pub fn session_config(&self, setup: &RealtimeSetup) -> Value {
        let format = json!({"type": "audio/pcm", "rate": RATE});
        let (transcription, turn_detection) = if setup.audio_input {
            (
                self.transcription_model
                    .as_ref()
                    .map_or(Value::Null, |m| json!({ "model": m })),
                json!({
                    "type": "server_vad",
                    "create_response": true,
                    "interrupt_response": false,
                }),
            )
        } else {
            // User turns arrive as text: nothing to detect or transcribe.
            (Value::Null, Value::Null)
        };
        let modality = match setup.modality {
            RealtimeModality::Audio => "audio",
            RealtimeModality::Text => "text",
        };
        json!({
            "type": "realtime",
            "instructions": setup.instructions,
            "output_modalities": [modality],
            "audio": {
                "input": {
                    "format": format,
                    "transcription": transcription,
                    "turn_detection": turn_detection,
                },
                "output": {"format": format, "voice": self.voice},
            },
            "tools": tools(&setup.tools),
            "tool_choice": "auto",
        })
    }

    /// Sends the session configuration and waits for the service to accept it.
    async fn configure(
        &self,
        ws: &mut WsStream,
        setup: &RealtimeSetup,
    ) -> Result<(), ProviderError> {
        let update = json!({
            "type": "session.update",
            "event_id": "hark_session_0",
            "session": self.session_config(setup),
        });
        ws.send(Message::text(update.to_string()))
            .await
            .map_err(|e| stream_error(e, self.key.as_ref()))?;
        let deadline = Instant::now() + self.setup_timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
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
                    return Err(ws::close_error(frame.as_ref(), self.key.as_ref())
                        .unwrap_or(ProviderError::Unavailable("closed during setup".into())))
                }
                _ => continue,
            };
            let event: ServerEvent = serde_json::from_slice(bytes).map_err(|e| {
                ProviderError::Protocol(format!("malformed event during setup: {e}"))
            })?;
            match event.kind.as_ref() {
                "session.updated" => return Ok(()),
                "error" => return Err(api_error(event.error.as_ref(), self.key.as_ref())),
                other => tracing::debug!(provider = "openai", event = other, "realtime setup"),
            }
        }
    }
}

#[async_trait]
impl Realtime for OpenAiRealtime {
    fn label(&self) -> &str {
        "openai"
    }

    fn input_rate(&self) -> u32 {
        RATE
    }

    fn output_rate(&self) -> u32 {
        RATE
    }

    async fn connect(&self, setup: RealtimeSetup) -> Result<RealtimeSession, ProviderError> {
        let auth = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let mut socket =
            ws::connect(&self.url, &headers, self.key.as_ref(), self.connect_timeout).await?;
        self.configure(&mut socket, &setup).await?;
        tracing::debug!(
            provider = "openai",
            tools = setup.tools.len(),
            modality = ?setup.modality,
            audio_input = setup.audio_input,
            "realtime session configured"
        );
        let queue = AudioQueue::new(RATE as usize * QUEUE_SECONDS);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(EVENTS);
        let task = Connection {
            pcm: queue.spare(),
            ws: socket,
            key: self.key.clone(),
            events: event_tx,
            queue: queue.clone(),
            scratch: Vec::new(),
            response_timeout: self.response_timeout,
            next_id: 1,
            awaiting: 0,
            current: None,
            queued: VecDeque::new(),
            abandoned: HashSet::new(),
            abandon_awaiting: 0,
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

/// The tools in the Realtime API's flat function format.
fn tools(specs: &[ToolSpec]) -> Value {
    Value::Array(specs.iter().map(openai_realtime_tool).collect())
}

/// The fields hark reads from any server event (the rest are ignored).
#[derive(Deserialize)]
struct ServerEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    item_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    response_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    transcript: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// The [`ProviderError`] an `error` object (of an `error` event or a failed response) means,
/// with the service's message redacted and shortened.
fn api_error(error: Option<&Value>, key: Option<&ApiKey>) -> ProviderError {
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (kind, code, message) = (field("type"), field("code"), field("message"));
    let message = shorten(&match key {
        Some(k) => k.redact(&message),
        None => message,
    });
    let what = if message.is_empty() {
        format!("{kind} {code}").trim().to_owned()
    } else {
        message
    };
    if kind.contains("rate_limit") || code.contains("rate_limit") {
        ProviderError::RateLimited { retry_after: None }
    } else if code == "invalid_api_key" || kind.contains("authentication") {
        ProviderError::Auth
    } else if kind == "server_error" || code == "session_expired" {
        ProviderError::Unavailable(what)
    } else {
        ProviderError::Protocol(what)
    }
}

/// A response the service is producing.
struct Response {
    id: String,
    /// Asked for by a [`RealtimeCommand::CreateResponse`] (the session counts on its end).
    ours: bool,
    /// Something of it was passed on (the session has seen it start).
    emitted: bool,
    /// Tool calls, passed on when the response completes.
    calls: Vec<ToolCallRequest>,
}

/// Why the connection's task stopped.
enum Stop {
    /// The session dropped its side, or the socket closed (already reported).
    Done,
}

/// The task that owns one open connection.
struct Connection {
    ws: WsStream,
    key: Option<ApiKey>,
    events: mpsc::Sender<RealtimeEvent>,
    queue: Arc<AudioQueue>,
    /// The buffer swapped with the queue's.
    pcm: Vec<u8>,
    /// Decoded base64 of the last audio delta.
    scratch: Vec<u8>,
    response_timeout: Duration,
    next_id: u64,
    /// `response.create`s sent whose `response.created` has not arrived.
    awaiting: usize,
    current: Option<Response>,
    /// `CreateResponse`s waiting for the response in flight to end (with their instructions).
    queued: VecDeque<Option<String>>,
    /// Responses given up after a timeout, whose late events are dropped.
    abandoned: HashSet<String>,
    /// Given-up `response.create`s not created yet.
    abandon_awaiting: usize,
    /// When the response due times out.
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
                    None => Err(Stop::Done),
                },
                msg = self.ws.next() => self.message(msg).await,
                _ = sleep_until(deadline) => self.timed_out().await,
            };
            if step.is_err() {
                break;
            }
        }
        // A polite close when the session ended; a dead socket just fails quickly.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    fn in_flight(&self) -> bool {
        self.awaiting > 0 || self.current.is_some()
    }

    fn id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("hark_{what}_{}", self.next_id - 1)
    }

    async fn emit(&mut self, event: RealtimeEvent) -> Result<(), Stop> {
        self.events.send(event).await.map_err(|_| Stop::Done)
    }

    /// Passes on an event of the current response, marking it seen.
    async fn emit_response(&mut self, event: RealtimeEvent) -> Result<(), Stop> {
        if let Some(r) = self.current.as_mut() {
            r.emitted = true;
        }
        self.emit(event).await
    }

    async fn send(&mut self, event: Value) -> Result<(), Stop> {
        let text = event.to_string();
        self.send_text(text).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), Stop> {
        if let Err(e) = self.ws.send(Message::text(text)).await {
            let e = stream_error(e, self.key.as_ref());
            let _ = self.emit(RealtimeEvent::Error(e)).await;
            return Err(Stop::Done);
        }
        Ok(())
    }

    // ---- commands ----------------------------------------------------------------------

    async fn command(&mut self, cmd: RealtimeCommand) -> Result<(), Stop> {
        match cmd {
            RealtimeCommand::UpdateSession {
                instructions,
                tools: specs,
            } => {
                let id = self.id("session");
                self.send(json!({
                    "type": "session.update",
                    "event_id": id,
                    "session": {
                        "type": "realtime",
                        "instructions": instructions,
                        "tools": tools(&specs),
                        "tool_choice": "auto",
                    },
                }))
                .await
            }
            RealtimeCommand::SendText(text) => {
                self.send(json!({
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": text}],
                    },
                }))
                .await
            }
            RealtimeCommand::CreateResponse { instructions } => {
                if self.in_flight() {
                    self.queued.push_back(instructions);
                    Ok(())
                } else {
                    self.create(instructions).await
                }
            }
            RealtimeCommand::ToolOutput {
                call_id,
                output,
                is_error,
                ..
            } => {
                // The API has no error flag: a failure is said in the output itself.
                let output = if is_error {
                    json!({ "error": output }).to_string()
                } else {
                    output
                };
                self.send(json!({
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": output},
                }))
                .await
            }
            RealtimeCommand::Cancel => {
                // Responses still waiting here never reach the service.
                while self.queued.pop_front().is_some() {
                    self.emit(RealtimeEvent::ResponseDone).await?;
                }
                if self.in_flight() {
                    let id = self.id("cancel");
                    self.send(json!({"type": "response.cancel", "event_id": id}))
                        .await?;
                }
                Ok(())
            }
            RealtimeCommand::Truncate { item_id, played_ms } => {
                let id = self.id("truncate");
                self.send(json!({
                    "type": "conversation.item.truncate",
                    "event_id": id,
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }))
                .await
            }
        }
    }

    /// Sends `response.create` (with one-off instructions when given).
    async fn create(&mut self, instructions: Option<String>) -> Result<(), Stop> {
        let id = self.id("response");
        let mut event = json!({"type": "response.create", "event_id": id});
        if let Some(i) = instructions {
            event["response"] = json!({ "instructions": i });
        }
        self.awaiting += 1;
        self.deadline = Some(Instant::now() + self.response_timeout);
        self.send(event).await
    }

    /// Sends the next waiting `CreateResponse` once nothing is in flight.
    async fn next_queued(&mut self) -> Result<(), Stop> {
        if self.in_flight() {
            return Ok(());
        }
        self.deadline = None;
        match self.queued.pop_front() {
            Some(instructions) => self.create(instructions).await,
            None => Ok(()),
        }
    }

    // ---- audio -------------------------------------------------------------------------

    async fn send_audio(&mut self) -> Result<(), Stop> {
        let dropped = self.queue.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                provider = "openai",
                samples = dropped,
                "realtime input behind: microphone audio dropped"
            );
        }
        while self.queue.take(&mut self.pcm) {
            const HEAD: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
            let mut text = String::with_capacity(HEAD.len() + self.pcm.len() * 4 / 3 + 8);
            text.push_str(HEAD);
            encode_audio(&self.pcm, &mut text);
            text.push_str("\"}");
            self.pcm.clear();
            self.send_text(text).await?;
        }
        Ok(())
    }

    // ---- server events -----------------------------------------------------------------

    async fn message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Stop> {
        let msg = match msg {
            None => {
                let _ = self
                    .emit(RealtimeEvent::Error(ProviderError::Unavailable(
                        "connection lost".into(),
                    )))
                    .await;
                return Err(Stop::Done);
            }
            Some(Err(e)) => {
                let e = stream_error(e, self.key.as_ref());
                let _ = self.emit(RealtimeEvent::Error(e)).await;
                return Err(Stop::Done);
            }
            Some(Ok(m)) => m,
        };
        let bytes = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b.as_ref(),
            Message::Close(frame) => {
                if let Some(e) = ws::close_error(frame.as_ref(), self.key.as_ref()) {
                    let _ = self.emit(RealtimeEvent::Error(e)).await;
                }
                return Err(Stop::Done);
            }
            _ => return Ok(()),
        };
        let event: ServerEvent = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(provider = "openai", error = %e, "malformed realtime event ignored");
                let e = ProviderError::Protocol(format!("malformed event: {e}"));
                return self.emit(RealtimeEvent::Error(e)).await;
            }
        };
        self.event(event).await
    }

    async fn event(&mut self, ev: ServerEvent<'_>) -> Result<(), Stop> {
        let kind = ev.kind.as_ref();
        if kind.starts_with("response.") {
            if let Some(id) = response_id(&ev) {
                if self.abandoned.contains(id) {
                    if kind == "response.done" {
                        self.abandoned.remove(id);
                    }
                    return Ok(());
                }
            }
            if self.in_flight() {
                self.deadline = Some(Instant::now() + self.response_timeout);
            }
        }
        match kind {
            "input_audio_buffer.speech_started" => {
                self.emit(RealtimeEvent::UserSpeechStarted).await
            }
            "input_audio_buffer.speech_stopped" => self.emit(RealtimeEvent::UserSpeechEnded).await,
            "conversation.item.input_audio_transcription.delta" => {
                let text = ev.delta.unwrap_or_default().into_owned();
                self.emit(user(text, false)).await
            }
            "conversation.item.input_audio_transcription.completed" => {
                let text = ev.transcript.unwrap_or_default().into_owned();
                self.emit(user(text, true)).await
            }
            "conversation.item.input_audio_transcription.failed" => {
                let e = api_error(ev.error.as_ref(), self.key.as_ref());
                tracing::warn!(provider = "openai", error = %e, "input transcription failed");
                // Ends the partial transcript the session may hold.
                self.emit(user(String::new(), true)).await
            }
            "response.created" => {
                let id = response_id(&ev).unwrap_or_default().to_owned();
                self.started(id);
                Ok(())
            }
            "response.output_audio.delta" | "response.audio.delta" => {
                self.ensure_current(&ev);
                let samples = match decode_audio(
                    ev.delta.as_deref().unwrap_or(""),
                    &mut self.scratch,
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(provider = "openai", error = %e, "bad audio delta ignored");
                        return self.emit(RealtimeEvent::Error(e)).await;
                    }
                };
                let item_id = ev.item_id.unwrap_or_default().into_owned();
                self.emit_response(RealtimeEvent::Audio { item_id, samples })
                    .await
            }
            "response.output_audio_transcript.delta"
            | "response.audio_transcript.delta"
            | "response.output_text.delta"
            | "response.text.delta" => {
                self.ensure_current(&ev);
                let text = ev.delta.unwrap_or_default().into_owned();
                self.emit_response(assistant(text, false)).await
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                self.ensure_current(&ev);
                let text = ev.transcript.unwrap_or_default().into_owned();
                self.emit_response(assistant(text, true)).await
            }
            "response.output_text.done" | "response.text.done" => {
                self.ensure_current(&ev);
                let text = ev.text.unwrap_or_default().into_owned();
                self.emit_response(assistant(text, true)).await
            }
            "response.function_call_arguments.done" => {
                self.ensure_current(&ev);
                let call = ToolCallRequest {
                    call_id: ev.call_id.unwrap_or_default().into_owned(),
                    name: ev.name.unwrap_or_default().into_owned(),
                    arguments: ev.arguments.unwrap_or_default().into_owned(),
                };
                if let Some(r) = self.current.as_mut() {
                    r.calls.push(call);
                }
                Ok(())
            }
            "response.done" => self.done(ev.response.as_ref()).await,
            "error" => self.error(ev.error.as_ref()).await,
            other => {
                tracing::trace!(provider = "openai", event = other, "realtime event");
                Ok(())
            }
        }
    }

    /// A response started (`response.created`): ours if one was asked for.
    fn started(&mut self, id: String) {
        if self.abandon_awaiting > 0 {
            // The answer to a request that timed out: dropped when it comes.
            self.abandon_awaiting -= 1;
            self.abandoned.insert(id);
            return;
        }
        let ours = self.awaiting > 0;
        self.awaiting = self.awaiting.saturating_sub(1);
        if let Some(old) = self.current.take() {
            tracing::warn!(provider = "openai", response = %old.id, "a response never ended");
        }
        self.current = Some(Response {
            id,
            ours,
            emitted: false,
            calls: Vec::new(),
        });
        self.deadline = Some(Instant::now() + self.response_timeout);
    }

    /// A response event without `response.created` before it (not expected): it starts one.
    fn ensure_current(&mut self, ev: &ServerEvent<'_>) {
        if self.current.is_none() {
            let id = ev.response_id.as_deref().unwrap_or("").to_owned();
            self.started(id);
        }
    }

    /// `response.done`: its tool calls if it completed, its error if it failed, and its end.
    async fn done(&mut self, response: Option<&Value>) -> Result<(), Stop> {
        let status = response
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("completed");
        let current = self.current.take().unwrap_or_else(|| {
            let ours = self.awaiting > 0;
            self.awaiting = self.awaiting.saturating_sub(1);
            Response {
                id: String::new(),
                ours,
                emitted: false,
                calls: Vec::new(),
            }
        });
        let mut emitted = current.emitted;
        match status {
            "completed" => {
                for call in current.calls {
                    emitted = true;
                    self.emit(RealtimeEvent::ToolCall(call)).await?;
                }
            }
            "failed" => {
                let error = response
                    .and_then(|r| r.pointer("/status_details/error"))
                    .filter(|e| e.is_object());
                let e = match error {
                    Some(e) => api_error(Some(e), self.key.as_ref()),
                    None => ProviderError::Unavailable("the response failed".into()),
                };
                self.emit(RealtimeEvent::Error(e)).await?;
            }
            "incomplete" => {
                let reason = response
                    .and_then(|r| r.pointer("/status_details/reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                tracing::warn!(
                    provider = "openai",
                    reason,
                    dropped_calls = current.calls.len(),
                    "realtime response incomplete"
                );
            }
            _ => {}
        }
        if current.ours || emitted {
            self.emit(RealtimeEvent::ResponseDone).await?;
        }
        self.next_queued().await
    }

    /// An `error` event: the client event it names decides what it means.
    async fn error(&mut self, error: Option<&Value>) -> Result<(), Stop> {
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let (code, cause) = (field("code"), field("event_id"));
        if code == "response_cancel_not_active" {
            tracing::debug!(
                provider = "openai",
                "cancel arrived after the response ended"
            );
            return Ok(());
        }
        if cause.starts_with("hark_response_") {
            if code == "conversation_already_has_active_response" {
                // The service's turn detection started an answer at the same moment: that
                // answer serves the request.
                tracing::debug!(
                    provider = "openai",
                    "response.create served by an active response"
                );
                return Ok(());
            }
            if self.awaiting > 0 {
                self.awaiting -= 1;
                let e = api_error(error, self.key.as_ref());
                tracing::warn!(provider = "openai", error = %e, "response.create refused");
                self.emit(RealtimeEvent::Error(e)).await?;
                self.emit(RealtimeEvent::ResponseDone).await?;
                return self.next_queued().await;
            }
        }
        let e = api_error(error, self.key.as_ref());
        tracing::warn!(provider = "openai", error = %e, event = cause, "realtime error event");
        self.emit(RealtimeEvent::Error(e)).await
    }

    /// The response due has been silent too long: it ends here, is cancelled on the service,
    /// and what it still sends is dropped.
    async fn timed_out(&mut self) -> Result<(), Stop> {
        self.deadline = None;
        if !self.in_flight() {
            return Ok(());
        }
        tracing::warn!(provider = "openai", "realtime response timed out");
        self.emit(RealtimeEvent::Error(ProviderError::Timeout))
            .await?;
        if let Some(r) = self.current.take() {
            if r.ours || r.emitted {
                self.emit(RealtimeEvent::ResponseDone).await?;
            }
            self.abandoned.insert(r.id);
        }
        for _ in 0..self.awaiting {
            self.emit(RealtimeEvent::ResponseDone).await?;
        }
        self.abandon_awaiting += std::mem::take(&mut self.awaiting);
        let id = self.id("cancel");
        self.send(json!({"type": "response.cancel", "event_id": id}))
            .await?;
        self.next_queued().await
    }
}

/// The response id of a `response.created`/`response.done` (inside `response`), or of any
/// other response event (`response_id`).
fn response_id<'e>(ev: &'e ServerEvent<'_>) -> Option<&'e str> {
    ev.response
        .as_ref()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .or(ev.response_id.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_map_to_provider_errors_without_the_key() {
        let key = ApiKey::new("sk-x");
        let e = |v: Value| api_error(Some(&v), Some(&key));
        assert_eq!(
            e(
                json!({"type": "invalid_request_error", "code": "rate_limit_exceeded", "message": "slow"})
            ),
            ProviderError::RateLimited { retry_after: None }
        );
        assert_eq!(
            e(
                json!({"type": "invalid_request_error", "code": "invalid_api_key", "message": "bad sk-x"})
            ),
            ProviderError::Auth
        );
        assert_eq!(
            e(json!({"type": "server_error", "message": "oops sk-x"})),
            ProviderError::Unavailable("oops ***".into())
        );
        assert_eq!(
            e(
                json!({"type": "invalid_request_error", "code": "invalid_value", "message": "Invalid voice"})
            ),
            ProviderError::Protocol("Invalid voice".into())
        );
        assert_eq!(
            api_error(None, None),
            ProviderError::Protocol(String::new())
        );
    }

    #[test]
    fn the_model_goes_in_the_query_and_only_ws_urls_are_accepted() {
        let p = OpenAiRealtime::new(OpenAiRealtimeConfig::new("gpt-realtime")).unwrap();
        assert_eq!(p.url, "wss://api.openai.com/v1/realtime?model=gpt-realtime");
        let bad = OpenAiRealtimeConfig {
            url: "https://api.openai.com/v1/realtime".into(),
            ..OpenAiRealtimeConfig::new("m")
        };
        assert!(matches!(
            OpenAiRealtime::new(bad),
            Err(OpenAiRealtimeError::InvalidUrl(_))
        ));
        let key = OpenAiRealtimeConfig {
            api_key: Some(ApiKey::new("bad\nkey")),
            ..OpenAiRealtimeConfig::new("m")
        };
        assert_eq!(
            OpenAiRealtime::new(key).unwrap_err(),
            OpenAiRealtimeError::InvalidKey
        );
    }
}
