//! The engine's realtime half: a speech-to-speech model ([`Realtime`]) in place of the LLM
//! and, depending on the mode, of speech-to-text and text-to-speech (spec 40 §3.5–3.10, §6).
//!
//! | mode | user audio | user turn | answer |
//! |---|---|---|---|
//! | `FullS2s` | to the model | the model's turn detection | the model's audio |
//! | `HybridStt` | to STT | STT + end of utterance → [`RealtimeCommand::SendText`] | the model's audio |
//! | `HybridTts` | to the model | the model's turn detection | the model's text → TTS |
//! | `LlmOnly` | to STT | as `HybridStt` | as `HybridTts` |
//!
//! The model's answers reuse the cascade's machinery instead of a parallel one: each answer is
//! the engine's current `Reply` (utterance handle, output clock, SPEAKING on the first frame,
//! IDLE when played out, interruptions, the tool runner and its depth limit, turn metrics). What
//! is particular to a model lives here: connecting it, turning its events into that reply,
//! sending it commands, and telling it what the user really heard when they cut it off.
//!
//! Deliberate differences from the reference Python, each a bug or a gap there:
//! - an interrupted answer is truncated on the model's side to the milliseconds actually played
//!   ([`RealtimeCommand::Truncate`]); the Python never truncates, so its model believes the user
//!   heard whole answers they cut off;
//! - barge-in detected by the session (its own VAD, words from an external STT in the hybrid
//!   STT mode, `interrupt()`) cancels the model's response; the Python's input-only orchestrator
//!   only marks the handle interrupted (spec 40 §12 #16);
//! - with a text-to-speech, the model is asked for text only (the Python never calls its
//!   `_configure_text_only_mode`);
//! - the realtime `LlmOnly` mode works: the model is connected and its text is spoken (the
//!   Python never connects it and feeds nothing to the TTS, spec 40 §12 #2).
//!
//! Protocol bookkeeping: every response ends with one [`RealtimeEvent::ResponseDone`], so the
//! engine knows which events belong to which answer without ids. Responses it asked for are
//! queued (`pending`); one the model starts by itself (its turn detection heard the user)
//! becomes a new reply, or, when a reply is already out, joins it. After a cancel, the events
//! of the cancelled responses are skipped up to their `ResponseDone`s.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Engine, UserInput};
use crate::agent::context::ChatRole;
use crate::agent::Agent;
use crate::audio::resample::Resampler;
use crate::providers::{
    ProviderError, Realtime, RealtimeCommand, RealtimeEvent, RealtimeInput, RealtimeModality,
    RealtimeSetup, ToolCallRequest,
};
use crate::session::pipeline::RealtimeMode;
use crate::session::state::{AgentState, SessionEvent, UserState};
use crate::session::utterance::UtteranceHandle;

/// How `say()` asks a speech-to-speech model to speak given words: as one-off instructions
/// for a single response, so no fake user turn joins the model's conversation.
pub(in crate::session) fn say_instructions(text: &str) -> String {
    format!("Say exactly the following, word for word, and nothing else:\n{text}")
}

/// The user's audio on its way to the model, shared with [`crate::session::SessionInput`]
/// (the front end pushes from its own thread) and emptied when the session closes.
pub(in crate::session) type SharedFeed = Arc<Mutex<Option<ModelFeed>>>;

/// Resamples the front end's audio to the model's rate and hands it over. Buffers are kept,
/// so pushing allocates nothing once running.
pub(in crate::session) struct ModelFeed {
    input: Box<dyn RealtimeInput>,
    resampler: Resampler,
    buf: Vec<f32>,
}

impl ModelFeed {
    /// Mono samples at the session's input rate.
    pub(in crate::session) fn push(&mut self, samples: &[f32]) {
        self.buf.clear();
        self.resampler.process(samples, &mut self.buf);
        if !self.buf.is_empty() {
            self.input.push_audio(&self.buf);
        }
    }
}

/// Whose a model response is, which decides where its words go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The current reply's answer: its transcript is the reply's text.
    Reply,
    /// A `say()` made from inside a tool: its words are already in the chat context.
    Say,
    /// Started by the model while a reply was out (its turn detection heard the user): it plays
    /// after the reply and its words join the context on their own.
    Loose,
}

/// The engine's side of an open model connection.
pub(in crate::session) struct ModelLink {
    /// The user's audio goes to the model (FULL_S2S, HYBRID_TTS).
    hears: bool,
    /// The model's audio is the agent's voice (FULL_S2S, HYBRID_STT); otherwise its text goes
    /// to the TTS.
    speaks: bool,
    /// The front end runs a VAD: user states and metrics follow it, not the model's.
    local_vad: bool,
    commands: mpsc::UnboundedSender<RealtimeCommand>,
    /// `None` once the connection has closed.
    events: Option<mpsc::Receiver<RealtimeEvent>>,
    feed: Option<SharedFeed>,

    // The model's audio towards the playout.
    /// The sink's rate (for milliseconds played).
    out_rate: u32,
    resampler: Resampler,
    resampler_used: bool,
    resampled: Vec<f32>,
    /// Samples (at the sink's rate) queued since the reply started; minus what is still queued,
    /// what has been played.
    pushed: u64,
    /// The items heard in this reply and where each starts in `pushed`.
    items: VecDeque<(String, u64)>,

    // Responses.
    active: Option<Owner>,
    pending: VecDeque<Owner>,
    /// Cancelled responses whose remaining events (up to their `ResponseDone`) are skipped.
    ignore: usize,
    /// Where the active response's text starts in the reply's text.
    text_base: usize,
    /// The user's words so far in the current non-final transcript.
    user_partial: String,
}

/// Connects `model` for `mode` with the agent's instructions and tools. Returns the engine's
/// side and, when the model hears the user, the audio feed for the session's input.
pub(in crate::session) async fn connect(
    model: &dyn Realtime,
    mode: RealtimeMode,
    agent: &dyn Agent,
    input_rate: u32,
    output_rate: u32,
    local_vad: bool,
) -> Result<(ModelLink, Option<SharedFeed>), ProviderError> {
    let (model_in, model_out) = (model.input_rate(), model.output_rate());
    if model_in == 0 || model_out == 0 {
        return Err(ProviderError::Protocol(format!(
            "{}: sample rates must be above zero (in {model_in} Hz, out {model_out} Hz)",
            model.label()
        )));
    }
    let hears = matches!(mode, RealtimeMode::FullS2s | RealtimeMode::HybridTts);
    let speaks = matches!(mode, RealtimeMode::FullS2s | RealtimeMode::HybridStt);
    let setup = RealtimeSetup {
        instructions: agent.instructions(),
        tools: agent.tools().iter().map(|t| t.spec().clone()).collect(),
        modality: if speaks {
            RealtimeModality::Audio
        } else {
            RealtimeModality::Text
        },
        audio_input: hears,
    };
    let session = model.connect(setup).await?;
    tracing::info!(model = model.label(), ?mode, "realtime model connected");
    let feed = hears.then(|| {
        Arc::new(Mutex::new(Some(ModelFeed {
            input: session.input,
            resampler: Resampler::new(input_rate, model_in),
            buf: Vec::with_capacity(model_in as usize),
        })))
    });
    let link = ModelLink {
        hears,
        speaks,
        local_vad,
        commands: session.commands,
        events: Some(session.events),
        feed: feed.clone(),
        out_rate: output_rate,
        resampler: Resampler::new(model_out, output_rate),
        resampler_used: false,
        resampled: Vec::with_capacity(output_rate as usize),
        pushed: 0,
        items: VecDeque::new(),
        active: None,
        pending: VecDeque::new(),
        ignore: 0,
        text_base: 0,
        user_partial: String::new(),
    };
    Ok((link, feed))
}

/// The model's next event; a missing or closed connection never yields again after reporting
/// the close (`None`) once.
pub(super) async fn next_event(rt: &mut Option<ModelLink>) -> Option<RealtimeEvent> {
    match rt.as_mut().and_then(|r| r.events.as_mut()) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl ModelLink {
    fn send(&self, cmd: RealtimeCommand) {
        // A closed connection is reported by its event channel.
        let _ = self.commands.send(cmd);
    }

    fn alive(&self) -> bool {
        self.events.is_some()
    }

    /// Starts the resampler afresh (a cut answer must not bleed into the next one).
    fn reset_resampler(&mut self) {
        if std::mem::take(&mut self.resampler_used) {
            self.resampler = Resampler::new(self.resampler.from_rate(), self.resampler.to_rate());
        }
    }
}

impl Engine {
    /// Whether a model is the agent's voice (so `say()` goes to it rather than to a TTS).
    pub(super) fn rt_speaks(&self) -> bool {
        self.rt.as_ref().is_some_and(|r| r.speaks)
    }

    pub(super) fn on_realtime(&mut self, ev: Option<RealtimeEvent>) {
        let Some(ev) = ev else {
            return self.rt_lost();
        };
        match ev {
            RealtimeEvent::UserSpeechStarted => self.rt_user_speech_started(),
            RealtimeEvent::UserSpeechEnded => self.rt_user_speech_ended(),
            RealtimeEvent::Transcript {
                role: ChatRole::User,
                text,
                is_final,
            } => self.rt_user_transcript(text, is_final),
            RealtimeEvent::Error(e) => self.error("realtime", e.to_string()),
            ev => self.rt_response_event(ev),
        }
    }

    // ---- the user ----------------------------------------------------------------------

    /// The model heard the user start: the user state follows (unless the front end's VAD
    /// drives it), and an answer being given is cut at once (the model's VAD has already
    /// waited for real speech), if the utterance allows it.
    fn rt_user_speech_started(&mut self) {
        if !self.rt.as_ref().is_some_and(|r| r.local_vad) {
            self.on_input(UserInput::SpeechStarted);
        }
        if !self.accept_input {
            return;
        }
        let active = self.reply.as_ref().is_some_and(|r| r.speaking)
            || (self.reply.is_some() && self.agent_state == AgentState::Thinking);
        if active && self.opts.interrupt.mode.uses_vad() {
            self.trigger_interruption();
        }
    }

    /// The user stopped: the model will answer, so the agent thinks (spec 40 §3.10).
    fn rt_user_speech_ended(&mut self) {
        if !self.accept_input {
            return;
        }
        let Some(rt) = self.rt.as_ref() else { return };
        let (local_vad, hears) = (rt.local_vad, rt.hears);
        if !local_vad {
            self.user_speaking = false;
            self.vad_monitor = None;
            self.turn.user_speech_end = Some(self.now_s());
            self.set_user_state(UserState::Idle);
        }
        if hears && self.reply.is_none() && !self.user_speaking {
            self.set_agent_state(AgentState::Thinking);
            self.mixer.start_thinking();
        } else if self.agent_state == AgentState::Listening {
            self.set_agent_state(AgentState::Idle);
        }
    }

    /// The model's transcript of the user: published, and a final one joins the context.
    fn rt_user_transcript(&mut self, text: String, is_final: bool) {
        if !self.accept_input {
            return;
        }
        let Some(rt) = self.rt.as_mut() else { return };
        if !is_final {
            rt.user_partial.push_str(&text);
            let text = rt.user_partial.clone();
            self.emit(SessionEvent::UserTranscript {
                text,
                is_final: false,
            });
            return;
        }
        rt.user_partial.clear();
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.emit(SessionEvent::UserTranscript {
            text: text.into(),
            is_final: true,
        });
        self.emit(SessionEvent::UserTurn { text: text.into() });
        self.ctx.add_message(ChatRole::User, text.to_string());
    }

    // ---- the model's answers -----------------------------------------------------------

    fn rt_response_event(&mut self, ev: RealtimeEvent) {
        let Some(rt) = self.rt.as_mut() else { return };
        if rt.ignore > 0 {
            if ev == RealtimeEvent::ResponseDone {
                rt.ignore -= 1;
            }
            return;
        }
        if rt.active.is_some() && self.reply.is_none() && ev == RealtimeEvent::ResponseDone {
            // The end of a response whose reply has already played out.
            rt.active = None;
            rt.reset_resampler();
            return;
        }
        if rt.active.is_none() || self.reply.is_none() {
            self.rt_response_started();
        }
        match ev {
            RealtimeEvent::Audio { item_id, samples } => self.rt_audio(item_id, &samples),
            RealtimeEvent::Transcript { text, is_final, .. } => {
                self.rt_agent_transcript(text, is_final)
            }
            RealtimeEvent::ToolCall(call) => {
                self.turn.first_tool_call.get_or_insert(self.now_s());
                self.emit(SessionEvent::ToolCalled {
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
                if let Some(reply) = self.reply.as_mut() {
                    reply.calls.push(call);
                }
            }
            RealtimeEvent::ResponseDone => self.rt_response_done(),
            RealtimeEvent::UserSpeechStarted
            | RealtimeEvent::UserSpeechEnded
            | RealtimeEvent::Error(_) => unreachable!("routed in on_realtime"),
        }
    }

    /// The first event of a response: whose it is, and a reply for it if none is out. Also
    /// when a response outlives the reply it joined (that one played out first): it then
    /// becomes a reply of its own.
    fn rt_response_started(&mut self) {
        self.turn.llm_first_token.get_or_insert(self.now_s());
        let Some(rt) = self.rt.as_mut() else { return };
        let mut owner = match rt.active.take() {
            Some(o) => o,
            None => match rt.pending.pop_front() {
                Some(o) => o,
                None if self.reply.is_some() => Owner::Loose,
                None => Owner::Reply,
            },
        };
        if self.reply.is_none() {
            // The model answers on its own (or a say from a tool outlived its reply: then the
            // reply is not the LLM's, and its words stay out of the context). Creating the
            // reply drops streams, which must not cancel responses still asked for.
            let rest = std::mem::take(&mut rt.pending);
            let handle = UtteranceHandle::new(true);
            self.current = Some(handle.clone());
            self.new_reply(handle, owner != Owner::Say, 0);
            owner = Owner::Reply;
            if let Some(rt) = self.rt.as_mut() {
                rt.pending = rest;
            }
        }
        let base = self.reply.as_ref().map_or(0, |r| r.text.len());
        if let Some(rt) = self.rt.as_mut() {
            rt.active = Some(owner);
            rt.text_base = base;
        }
    }

    /// Model speech: to the playout at the sink's rate, remembering which item is where so an
    /// interruption can say how much of it was played. Ignored when a TTS speaks instead.
    fn rt_audio(&mut self, item_id: String, samples: &[f32]) {
        if self.reply.is_none() || !self.rt_speaks() {
            return;
        }
        self.turn.tts_first_byte.get_or_insert(self.now_s());
        let Some(rt) = self.rt.as_mut() else { return };
        // Items whose successor has started playing are over: only the last ones matter.
        let played = rt.pushed.saturating_sub(self.playout.len() as u64);
        while rt.items.len() > 1 && rt.items[1].1 <= played {
            rt.items.pop_front();
        }
        if rt.items.back().map(|(id, _)| id.as_str()) != Some(item_id.as_str()) {
            rt.items.push_back((item_id, rt.pushed));
        }
        rt.resampler_used = true;
        rt.resampled.clear();
        rt.resampler.process(samples, &mut rt.resampled);
        self.playout.extend(rt.resampled.iter());
        rt.pushed += rt.resampled.len() as u64;
    }

    /// The model's own words. A final transcript replaces the pieces before it; with a TTS,
    /// only final text is spoken (whole, through the segmenter), as the reference does.
    fn rt_agent_transcript(&mut self, text: String, is_final: bool) {
        let Some(rt) = self.rt.as_ref() else { return };
        let (owner, base, speaks) = (rt.active, rt.text_base, rt.speaks);
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        if owner == Some(Owner::Say) {
            return;
        }
        if !reply.from_llm {
            if owner == Some(Owner::Loose) && is_final && !text.trim().is_empty() {
                // Not the say's words: the model answered the user meanwhile.
                self.ctx.add_message(ChatRole::Assistant, text.clone());
                self.emit(SessionEvent::AgentText { text });
            }
            return;
        }
        if is_final {
            reply.text.truncate(base.min(reply.text.len()));
        }
        reply.text.push_str(&text);
        if !speaks && is_final && reply.speech.tts_text.is_some() {
            for seg in reply.segmenter.push(&text) {
                if Self::speak_segment(&self.hooks, &mut reply.speech, seg) {
                    let now = (tokio::time::Instant::now() - self.started_at).as_secs_f64();
                    self.turn.tts_request.get_or_insert(now);
                }
            }
        }
    }

    /// A response is complete: its audio is all queued, and the reply goes on as after an LLM
    /// stream (its tool calls run, or its text is complete).
    fn rt_response_done(&mut self) {
        let Some(rt) = self.rt.as_mut() else { return };
        let owner = rt.active.take();
        if rt.resampler_used {
            rt.resampled.clear();
            rt.resampler.flush(&mut rt.resampled);
            self.playout.extend(rt.resampled.iter());
            rt.pushed += rt.resampled.len() as u64;
            rt.reset_resampler();
        }
        if owner == Some(Owner::Say) {
            return;
        }
        // While tools run, the reply's round is not over (a say from a tool answered here).
        if self.reply.as_ref().is_some_and(|r| !r.tools_running) {
            self.llm_finished();
        }
    }

    // ---- asking the model --------------------------------------------------------------

    /// Answers the user turn or `reply()` instructions just added to the context (the last
    /// user message), with the model instead of an LLM.
    pub(super) fn rt_generate(&mut self, handle: UtteranceHandle) {
        let text = self
            .ctx
            .items()
            .last()
            .and_then(|i| i.as_message())
            .filter(|m| m.role == ChatRole::User)
            .map(|m| m.text());
        self.new_reply(handle, true, 0);
        self.mixer.start_thinking();
        self.set_agent_state(AgentState::Thinking);
        self.rt_request(text, None, Owner::Reply);
    }

    /// `say()` with the model as the voice: it is asked to speak the words verbatim.
    pub(super) fn rt_say(&mut self, handle: UtteranceHandle, text: String) -> UtteranceHandle {
        let instructions = Some(say_instructions(&text));
        if self.reply.is_some() {
            // Only from inside a tool (otherwise say() has stopped the current reply): the
            // words play as part of the reply being answered, so this handle has no playback
            // of its own and is done once asked for.
            if self.rt.as_ref().is_some_and(ModelLink::alive) {
                self.rt_request(None, instructions, Owner::Say);
            }
            handle.mark_done();
            return handle;
        }
        self.new_reply(handle.clone(), false, 0);
        if let Some(reply) = self.reply.as_mut() {
            reply.text = text;
        }
        self.rt_request(None, instructions, Owner::Reply);
        handle
    }

    /// Tool outputs went back: the model continues the reply.
    pub(super) fn rt_continue(&mut self) {
        self.mixer.start_thinking();
        self.set_agent_state(AgentState::Thinking);
        self.rt_request(None, None, Owner::Reply);
    }

    /// Sends `text` (a user turn) if any, then asks for a response owned by `owner`. With the
    /// connection gone, the reply ends at once instead of waiting for an answer.
    fn rt_request(&mut self, text: Option<String>, instructions: Option<String>, owner: Owner) {
        let Some(rt) = self.rt.as_mut() else { return };
        if !rt.alive() {
            self.error("realtime", "the model is not connected".into());
            if owner != Owner::Say {
                self.llm_finished_without_more();
            }
            return;
        }
        if let Some(text) = text {
            rt.send(RealtimeCommand::SendText(text));
        }
        rt.send(RealtimeCommand::CreateResponse { instructions });
        rt.pending.push_back(owner);
        self.turn.llm_request.get_or_insert(self.now_s());
    }

    /// A tool's result, back to the model that asked for it.
    pub(super) fn rt_tool_output(&self, call: &ToolCallRequest, output: &str, is_error: bool) {
        if let Some(rt) = &self.rt {
            rt.send(RealtimeCommand::ToolOutput {
                call_id: call.call_id.clone(),
                name: call.name.clone(),
                output: output.to_string(),
                is_error,
            });
        }
    }

    /// A hand-off: the model takes the new agent's instructions and tools.
    pub(super) fn rt_update_session(&self) {
        if let Some(rt) = &self.rt {
            rt.send(RealtimeCommand::UpdateSession {
                instructions: self.agent.instructions(),
                tools: self.tools.iter().map(|t| t.spec().clone()).collect(),
            });
        }
    }

    // ---- stopping ----------------------------------------------------------------------

    /// The reply's streams are being dropped (interrupted, replaced, closing): cancel what the
    /// model is still generating and truncate each item to what was played. Runs before the
    /// playout is cleared, whose length says how much of the queued audio was not heard.
    pub(super) fn rt_drop_response(&mut self) {
        let Some(rt) = self.rt.as_mut() else { return };
        let was_active = rt.active.is_some();
        let in_flight = usize::from(was_active) + rt.pending.len();
        if in_flight > 0 {
            rt.send(RealtimeCommand::Cancel);
            rt.ignore += in_flight;
            rt.active = None;
            rt.pending.clear();
        }
        let played = rt.pushed.saturating_sub(self.playout.len() as u64);
        let n = rt.items.len();
        for (i, (item_id, start)) in rt.items.iter().enumerate() {
            let end = rt.items.get(i + 1).map_or(rt.pushed, |next| next.1);
            let more_coming = i + 1 == n && was_active;
            if played >= end && !more_coming {
                continue;
            }
            let ms = played.saturating_sub(*start) * 1000 / u64::from(rt.out_rate.max(1));
            let _ = rt.commands.send(RealtimeCommand::Truncate {
                item_id: item_id.clone(),
                played_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            });
        }
        rt.items.clear();
        rt.pushed = 0;
        rt.reset_resampler();
    }

    /// The connection closed: reported once, and a reply waiting for an answer ends.
    fn rt_lost(&mut self) {
        let Some(rt) = self.rt.as_mut() else { return };
        rt.events = None;
        if let Some(feed) = &rt.feed {
            feed.lock().expect("realtime input").take();
        }
        let waiting = rt.active.take().is_some() || !rt.pending.is_empty();
        rt.pending.clear();
        rt.ignore = 0;
        if rt.resampler_used {
            rt.resampled.clear();
            rt.resampler.flush(&mut rt.resampled);
            self.playout.extend(rt.resampled.iter());
            rt.pushed += rt.resampled.len() as u64;
            rt.reset_resampler();
        }
        self.error("realtime", "the connection to the model closed".into());
        if waiting && self.reply.is_some() {
            self.llm_finished_without_more();
        }
    }

    /// The session ends: the model's connection and audio input close.
    pub(super) fn rt_close(&mut self) {
        if let Some(rt) = self.rt.take() {
            if let Some(feed) = &rt.feed {
                feed.lock().expect("realtime input").take();
            }
        }
    }
}
