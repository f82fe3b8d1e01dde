//! Speech-to-speech ("realtime") models in the conversation engine, on a paused clock with a
//! scripted model: each mode's data flow, tool round trips, barge-in with the truncation the
//! reference never sends, utterances that must not be cut, errors, hand-off and close.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::{Agent, ChatRole, Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use hark::providers::{
    ProviderError, RealtimeCommand, RealtimeEvent, RealtimeModality, SttEvent, ToolCallRequest,
};
use hark::session::{AgentState, SessionEvent, SessionOptions, UserInput, WakeUp};
use serde_json::{json, Value};
use tokio::time::Instant;

mod support;
use support::alloc;
use support::scripted::*;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn states(events: &[SessionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::AgentStateChanged { state } => Some(format!("agent:{state:?}")),
            SessionEvent::UserStateChanged { state } => Some(format!("user:{state:?}")),
            _ => None,
        })
        .collect()
}

fn user_said(text: &str) -> RealtimeEvent {
    RealtimeEvent::Transcript {
        role: ChatRole::User,
        text: text.into(),
        is_final: true,
    }
}

fn create_response() -> RealtimeCommand {
    RealtimeCommand::CreateResponse { instructions: None }
}

async fn interrupted(h: &mut Harness) {
    h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
        .await
}

/// The milliseconds of the agent's voice the sink received (every played sample is voiced).
fn voiced_ms(h: &Harness) -> f64 {
    h.sink.voiced_seconds() * 1000.0
}

// ---- full speech-to-speech -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn full_s2s_hears_at_the_models_rate_plays_at_the_sinks_and_records_both_sides() {
    let (mut h, mut model) = realtime_harness(
        agent("You are terse."),
        Beside::default(),
        SessionOptions::default(),
        None,
    )
    .await;
    let setup = model.setup();
    assert_eq!(setup.instructions, "You are terse.");
    assert_eq!(setup.modality, RealtimeModality::Audio);
    assert!(setup.audio_input);

    // One second of microphone audio at 16 kHz reaches the model at its 24 kHz.
    let input = h.session.input();
    for _ in 0..50 {
        input.push_audio(&[0.25; 320]);
    }
    let heard = model.heard.len();
    assert!((23_500..=24_000).contains(&heard), "{heard} samples");
    let samples = model.heard.samples();
    assert!(
        samples[2_000..heard - 2_000]
            .iter()
            .all(|x| (x - 0.25).abs() < 0.01),
        "the signal survives resampling"
    );

    model.send(RealtimeEvent::UserSpeechStarted).await;
    model.send(RealtimeEvent::UserSpeechEnded).await;
    model.speak("item_1", 0.5).await;
    // The user's transcript comes late, as OpenAI's input transcription does.
    model.send(user_said("what time is it")).await;
    model.says("It is noon.").await;
    model.send(RealtimeEvent::ResponseDone).await;
    let events = h.events_until_idle().await;
    assert_eq!(
        states(&events),
        [
            "user:Speaking",
            "agent:Listening",
            "user:Idle",
            "agent:Thinking",
            "agent:Speaking",
            "user:Listening",
            "user:Idle",
            "agent:Idle"
        ]
    );
    // 12 000 samples at 24 kHz are 0.5 s at the sink's 16 kHz, all played.
    assert!((h.sink.voiced_seconds() - 0.5).abs() < 0.001);
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["role"], "user");
    assert_eq!(history[0]["content"][0], "what time is it");
    assert_eq!(history[1]["role"], "assistant");
    assert_eq!(history[1]["content"][0], "It is noon.");
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::UserTurn { text } if text == "what time is it"
    )));
    let m = events
        .iter()
        .find_map(|e| match e {
            SessionEvent::TurnMetrics(m) => Some(m.clone()),
            _ => None,
        })
        .expect("turn metrics");
    for (name, v) in [
        ("user_speech_end", m.user_speech_end),
        ("llm_first_token", m.llm_first_token),
        ("tts_first_byte", m.tts_first_byte),
        ("first_sample_played", m.first_sample_played),
    ] {
        assert!(v.is_some(), "{name} missing: {m:?}");
    }
    assert!(m.interrupted.is_none());
    assert!(model.sent().is_empty(), "the model answered on its own");
}

// ---- tools -----------------------------------------------------------------------------

struct Weather;

#[async_trait]
impl Tool for Weather {
    fn spec(&self) -> &ToolSpec {
        static SPEC: std::sync::OnceLock<ToolSpec> = std::sync::OnceLock::new();
        SPEC.get_or_init(|| ToolSpec {
            name: "get_weather".into(),
            description: "Weather in a city.".into(),
            parameters: json!({"type":"object","properties":{"city":{"type":"string"}}}),
        })
    }
    async fn call(&self, args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match args["city"].as_str() {
            Some("Atlantis") => Err(ToolError::Failed("unknown city".into())),
            Some(city) => Ok(ToolOutput::Json(json!({"city": city, "temp_c": 21}))),
            None => Err(ToolError::InvalidArguments("city missing".into())),
        }
    }
}

fn weather_call(id: &str, city: &str) -> RealtimeEvent {
    RealtimeEvent::ToolCall(ToolCallRequest {
        call_id: id.into(),
        name: "get_weather".into(),
        arguments: json!({ "city": city }).to_string(),
    })
}

#[tokio::test(start_paused = true)]
async fn tool_outputs_go_back_to_the_model_then_it_is_asked_to_continue() {
    let weather: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You know the weather.".into(),
        greeting: None,
        tools: vec![Arc::new(Weather)],
    });
    let (mut h, mut model) =
        realtime_harness(weather, Beside::default(), SessionOptions::default(), None).await;
    assert_eq!(model.setup().tools[0].name, "get_weather");
    model.send(RealtimeEvent::UserSpeechStarted).await;
    model.send(RealtimeEvent::UserSpeechEnded).await;
    model.send(weather_call("c1", "Paris")).await;
    model.send(weather_call("c2", "Atlantis")).await;
    model.send(RealtimeEvent::ResponseDone).await;
    let asked = Instant::now();

    let RealtimeCommand::ToolOutput {
        call_id,
        name,
        output,
        is_error,
    } = model.next_command().await
    else {
        panic!("a tool output first")
    };
    assert_eq!(
        (Instant::now() - asked).as_millis(),
        1000,
        "both tools ran at once"
    );
    assert_eq!((call_id.as_str(), name.as_str()), ("c1", "get_weather"));
    assert!(output.contains("21") && !is_error, "{output}");
    assert_eq!(
        model.next_command().await,
        RealtimeCommand::ToolOutput {
            call_id: "c2".into(),
            name: "get_weather".into(),
            output: "unknown city".into(),
            is_error: true,
        },
        "a failed tool goes back as an error output"
    );
    assert_eq!(model.next_command().await, create_response());

    model.speak("item_2", 0.3).await;
    model.says("Paris is 21 degrees.").await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert!((h.sink.voiced_seconds() - 0.3).abs() < 0.001);
    let history = h.session.history(true, false).await.unwrap();
    let types: Vec<&str> = history
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "message"
        ]
    );
    assert_eq!(history[4]["content"][0], "Paris is 21 degrees.");
}

struct HandOff(Arc<dyn Agent>);

#[async_trait]
impl Tool for HandOff {
    fn spec(&self) -> &ToolSpec {
        static SPEC: std::sync::OnceLock<ToolSpec> = std::sync::OnceLock::new();
        SPEC.get_or_init(|| ToolSpec {
            name: "to_billing".into(),
            description: "Hand over to billing.".into(),
            parameters: json!({"type":"object","properties":{}}),
        })
    }
    async fn call(&self, _args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::Handoff(self.0.clone(), "Transferred.".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_hand_off_updates_the_model_session_and_the_new_agent_greets_through_it() {
    let billing: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You are the billing agent.".into(),
        greeting: Some("Billing here.".into()),
        tools: Vec::new(),
    });
    let front: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You are the front desk.".into(),
        greeting: None,
        tools: vec![Arc::new(HandOff(billing))],
    });
    let (mut h, mut model) =
        realtime_harness(front, Beside::default(), SessionOptions::default(), None).await;
    model
        .send(RealtimeEvent::ToolCall(ToolCallRequest {
            call_id: "h".into(),
            name: "to_billing".into(),
            arguments: "{}".into(),
        }))
        .await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.until(|e| matches!(e, SessionEvent::AgentSwitched).then_some(()))
        .await;
    assert_eq!(
        model.next_command().await,
        RealtimeCommand::ToolOutput {
            call_id: "h".into(),
            name: "to_billing".into(),
            output: "Transferred.".into(),
            is_error: false,
        }
    );
    assert_eq!(
        model.next_command().await,
        RealtimeCommand::UpdateSession {
            instructions: "You are the billing agent.".into(),
            tools: Vec::new(),
        }
    );
    // No continuation of the old agent's turn: the new agent speaks first.
    let RealtimeCommand::CreateResponse {
        instructions: Some(i),
    } = model.next_command().await
    else {
        panic!("the greeting")
    };
    assert!(i.contains("Billing here."), "{i}");
    assert!(model.sent().is_empty());
}

// ---- barge-in --------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn barge_in_cancels_the_answer_and_truncates_it_to_the_played_ms_which_the_reference_never_does(
) {
    let (mut h, mut model) = realtime_harness(
        agent("Talk a lot."),
        Beside::default(),
        SessionOptions::default(),
        None,
    )
    .await;
    model
        .send(RealtimeEvent::Transcript {
            role: ChatRole::Assistant,
            text: "Once upon a time".into(),
            is_final: false,
        })
        .await;
    model.speak("item_a", 3.0).await; // still generating: no ResponseDone yet
    h.agent_state(AgentState::Speaking).await;
    let spoke_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    model.send(RealtimeEvent::UserSpeechStarted).await;
    interrupted(&mut h).await;
    assert_eq!((Instant::now() - spoke_at).as_millis(), 1000, "at once");
    assert_eq!(model.next_command().await, RealtimeCommand::Cancel);
    let RealtimeCommand::Truncate { item_id, played_ms } = model.next_command().await else {
        panic!("a truncation")
    };
    assert_eq!(item_id, "item_a");
    assert!((1000..=1020).contains(&played_ms), "{played_ms} ms");
    assert!(
        (f64::from(played_ms) - voiced_ms(&h)).abs() <= 1.0,
        "truncated at {played_ms} ms, played {} ms",
        voiced_ms(&h)
    );
    let history = h.session.history(false, false).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["content"][0], "Once upon a time");
    assert_eq!(last["interrupted"], true);

    // The cancelled response's last audio and its end are skipped: playout stays stopped.
    let played = h.sink.voiced_seconds();
    model.speak("item_a", 1.0).await;
    model.send(RealtimeEvent::ResponseDone).await;
    model.send(RealtimeEvent::UserSpeechEnded).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.sink.voiced_seconds(), played);

    // The answer to what the user said then plays normally.
    model.speak("item_b", 0.2).await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert!((h.sink.voiced_seconds() - played - 0.2).abs() < 0.001);
    assert!(model.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn local_vad_barge_in_waits_the_minimum_duration_and_a_finished_answer_is_only_truncated() {
    let vad = Beside {
        vad: true,
        ..Beside::default()
    };
    let (mut h, mut model) =
        realtime_harness(agent("x"), vad, SessionOptions::default(), None).await;
    model.speak("item_a", 3.0).await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    let spoke_at = Instant::now();
    h.session.input().user(UserInput::SpeechStarted);
    interrupted(&mut h).await;
    assert_eq!((Instant::now() - spoke_at).as_millis(), 500);
    let RealtimeCommand::Truncate { item_id, played_ms } = model.next_command().await else {
        panic!("a truncation")
    };
    assert_eq!(item_id, "item_a");
    assert!((500..=520).contains(&played_ms), "{played_ms} ms");
    assert!((f64::from(played_ms) - voiced_ms(&h)).abs() <= 1.0);
    assert!(
        model.sent().is_empty(),
        "nothing to cancel: the model had finished generating"
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_interruptible_say_is_spoken_by_the_model_verbatim_and_not_cut() {
    let vad = Beside {
        vad: true,
        ..Beside::default()
    };
    let (mut h, mut model) =
        realtime_harness(agent("x"), vad, SessionOptions::default(), None).await;
    let line = "Please listen to this notice in full.";
    let handle = h.session.say(line, false).await.unwrap();
    let RealtimeCommand::CreateResponse {
        instructions: Some(i),
    } = model.next_command().await
    else {
        panic!("a response with instructions")
    };
    assert!(i.contains(line), "{i}");
    model.speak("item_s", 1.0).await;
    model.says(line).await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    // Both the model's VAD and the local one hear the user: neither may cut it.
    model.send(RealtimeEvent::UserSpeechStarted).await;
    h.session.input().user(UserInput::SpeechStarted);
    handle.wait().await;
    assert!(!handle.interrupted());
    assert!((h.sink.voiced_seconds() - 1.0).abs() < 0.001);
    assert!(model.sent().is_empty(), "no cancel, no truncation");
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(history.len(), 1, "the line once: {history:?}");
    assert_eq!(history[0]["content"][0], line);
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_model_starts_during_a_non_interruptible_say_plays_after_it() {
    let (mut h, mut model) = realtime_harness(
        agent("x"),
        Beside::default(),
        SessionOptions::default(),
        None,
    )
    .await;
    let line = "Please hold the line.";
    let handle = h.session.say(line, false).await.unwrap();
    model.next_command().await;
    model.speak("say_item", 1.0).await;
    model.says(line).await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    // The user asks something over it; the model's turn detection answers on its own.
    model.send(RealtimeEvent::UserSpeechStarted).await;
    model.send(user_said("how long")).await;
    model.send(RealtimeEvent::UserSpeechEnded).await;
    model.speak("answer_item", 0.5).await;
    model.says("About a minute.").await;
    model.send(RealtimeEvent::ResponseDone).await;
    handle.wait().await;
    assert!(!handle.interrupted());
    assert!(
        (h.sink.voiced_seconds() - 1.5).abs() < 0.001,
        "the line, then the answer: {} s",
        h.sink.voiced_seconds()
    );
    let history = h.session.history(false, false).await.unwrap();
    let texts: Vec<&str> = history
        .iter()
        .map(|i| i["content"][0].as_str().unwrap())
        .collect();
    assert_eq!(texts, [line, "how long", "About a minute."]);
    assert!(model.sent().is_empty());
}

// ---- hybrid modes ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hybrid_stt_sends_the_end_of_utterance_transcript_to_the_model_as_text() {
    let stt = Beside {
        stt: true,
        vad: true,
        ..Beside::default()
    };
    let (mut h, mut model) =
        realtime_harness(agent("Book tables."), stt, SessionOptions::default(), None).await;
    let setup = model.setup();
    assert_eq!(setup.modality, RealtimeModality::Audio);
    assert!(!setup.audio_input);
    h.session.input().push_audio(&[0.1; 320]);
    assert_eq!(model.heard.len(), 0, "audio goes to the STT");

    h.user_says("a table for two", 0.9).await;
    assert_eq!(h.until(turn_text).await, "a table for two");
    assert_eq!(h.elapsed_ms(), 500, "the cascade's end-of-utterance wait");
    assert_eq!(
        model.next_command().await,
        RealtimeCommand::SendText("a table for two".into())
    );
    assert_eq!(model.next_command().await, create_response());
    model.speak("item_1", 0.4).await;
    model.says("Booked.").await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert!((h.sink.voiced_seconds() - 0.4).abs() < 0.001);
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(history[0]["content"][0], "a table for two");
    assert_eq!(history[1]["content"][0], "Booked.");
}

#[tokio::test(start_paused = true)]
async fn hybrid_stt_words_barge_in_and_cancel_the_model_unlike_the_reference() {
    let stt = Beside {
        stt: true,
        vad: true,
        ..Beside::default()
    };
    let (mut h, mut model) =
        realtime_harness(agent("x"), stt, SessionOptions::default(), None).await;
    h.user_says("tell me a story", 0.9).await;
    model.next_command().await; // the text
    model.next_command().await; // the response
    model.speak("item_1", 3.0).await;
    h.agent_state(AgentState::Speaking).await;
    h.stt
        .send(SttEvent::Interim("wait stop".into()))
        .await
        .unwrap();
    interrupted(&mut h).await;
    assert_eq!(model.next_command().await, RealtimeCommand::Cancel);
    assert!(matches!(
        model.next_command().await,
        RealtimeCommand::Truncate {
            played_ms: 0..=20,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn hybrid_tts_speaks_the_models_final_text_through_tts_and_ignores_its_audio() {
    let tts = Beside {
        tts: true,
        ..Beside::default()
    };
    let (mut h, mut model) =
        realtime_harness(agent("x"), tts, SessionOptions::default(), None).await;
    let setup = model.setup();
    assert_eq!(setup.modality, RealtimeModality::Text);
    assert!(setup.audio_input);
    h.session.input().push_audio(&[0.1; 320]);
    assert!(model.heard.len() > 0, "the model hears the user");

    model.send(RealtimeEvent::UserSpeechStarted).await;
    model.send(RealtimeEvent::UserSpeechEnded).await;
    model.speak("item_1", 1.0).await; // a model that speaks anyway is not heard
    model
        .send(RealtimeEvent::Transcript {
            role: ChatRole::Assistant,
            text: "Hello".into(),
            is_final: false,
        })
        .await;
    model.says("Hello there. How can I help?").await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(
        h.tts_texts.lock().unwrap().join(" "),
        "Hello there. How can I help?"
    );
    assert!(
        (h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001,
        "only the TTS played: {} s",
        h.sink.voiced_seconds()
    );
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(
        history.last().unwrap()["content"][0],
        "Hello there. How can I help?"
    );
    assert!(model.sent().is_empty(), "the model answered on its own");
}

#[tokio::test(start_paused = true)]
async fn hybrid_tts_barge_in_stops_the_tts_and_cancels_the_models_answer() {
    let tts = Beside {
        tts: true,
        ..Beside::default()
    };
    let (mut h, mut model) =
        realtime_harness(agent("x"), tts, SessionOptions::default(), None).await;
    let story = "This is a long answer that goes on and on. ".repeat(7);
    model.says(story.trim()).await; // the response is still open
    h.agent_state(AgentState::Speaking).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    model.send(RealtimeEvent::UserSpeechStarted).await;
    interrupted(&mut h).await;
    assert_eq!(model.next_command().await, RealtimeCommand::Cancel);
    let played = h.sink.voiced_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.sink.voiced_seconds(), played, "the TTS audio stopped");
    assert!(played < 0.5, "{played} s of a {} s answer", h.tts_seconds());
    assert!(
        model.sent().is_empty(),
        "no audio of the model's to truncate"
    );
}

#[tokio::test(start_paused = true)]
async fn with_stt_and_tts_the_model_is_connected_and_used_as_a_text_llm_unlike_the_reference() {
    let both = Beside {
        stt: true,
        tts: true,
        vad: true,
    };
    let (mut h, mut model) =
        realtime_harness(agent("x"), both, SessionOptions::default(), None).await;
    let setup = model.setup();
    assert_eq!(setup.modality, RealtimeModality::Text);
    assert!(!setup.audio_input);
    h.user_says("hello there", 0.9).await;
    assert_eq!(
        model.next_command().await,
        RealtimeCommand::SendText("hello there".into())
    );
    assert_eq!(model.next_command().await, create_response());
    model.says("Hi. What can I do?").await;
    model.send(RealtimeEvent::ResponseDone).await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(h.tts_texts.lock().unwrap().join(" "), "Hi. What can I do?");
}

// ---- errors, timers, close -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_model_error_is_reported_and_the_session_keeps_answering() {
    let (mut h, mut model) = realtime_harness(
        agent("x"),
        Beside::default(),
        SessionOptions::default(),
        None,
    )
    .await;
    model
        .send(RealtimeEvent::Error(ProviderError::Unavailable(
            "overloaded".into(),
        )))
        .await;
    let (component, message) = h
        .until(|e| match e {
            SessionEvent::Error { component, message } => {
                Some((component.to_string(), message.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(component, "realtime");
    assert!(message.contains("overloaded"), "{message}");

    let handle = h
        .session
        .reply("Greet the user.", false, true)
        .await
        .unwrap();
    assert_eq!(
        model.next_command().await,
        RealtimeCommand::SendText("Greet the user.".into())
    );
    assert_eq!(model.next_command().await, create_response());
    model.speak("item_1", 0.2).await;
    model.says("Hi!").await;
    model.send(RealtimeEvent::ResponseDone).await;
    handle.wait().await;
    assert!(!handle.interrupted());
    assert!((h.sink.voiced_seconds() - 0.2).abs() < 0.001);
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_is_reported_and_ends_the_answer_being_waited_for() {
    let (mut h, mut model) = realtime_harness(
        agent("x"),
        Beside::default(),
        SessionOptions::default(),
        None,
    )
    .await;
    let handle = h.session.reply("Tell a story.", false, true).await.unwrap();
    model.next_command().await;
    model.next_command().await;
    // The model's side goes away.
    drop(std::mem::replace(
        &mut model.events,
        tokio::sync::mpsc::channel(1).0,
    ));
    let message = h
        .until(|e| match e {
            SessionEvent::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .await;
    assert!(message.contains("closed"), "{message}");
    handle.wait().await;
    // Later requests end at once instead of waiting for a model that is gone.
    let said = h.session.say("Still there?", true).await.unwrap();
    said.wait().await;
    h.session.reply("Again.", true, true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_wake_up_timer_prompts_through_the_model() {
    let options = SessionOptions {
        wake_up: Some(WakeUp {
            after: Duration::from_secs(10),
            prompt: Some("Are you still there?".into()),
            max_prompts: 1,
            goodbye: None,
        }),
        ..SessionOptions::default()
    };
    let (mut h, mut model) = realtime_harness(agent("x"), Beside::default(), options, None).await;
    h.until(|e| matches!(e, SessionEvent::WakeUp).then_some(()))
        .await;
    assert_eq!(h.elapsed_ms(), 10_000);
    let RealtimeCommand::CreateResponse {
        instructions: Some(i),
    } = model.next_command().await
    else {
        panic!("the prompt")
    };
    assert!(i.contains("Are you still there?"), "{i}");
}

#[tokio::test(start_paused = true)]
async fn closing_the_session_closes_the_model_connection_and_its_audio_input() {
    let (h, mut model) = realtime_harness(
        agent("x"),
        Beside::default(),
        SessionOptions::default(),
        None,
    )
    .await;
    let input = h.session.input();
    input.push_audio(&[0.1; 320]);
    let heard = model.heard.len();
    h.session.close().await;
    assert!(model.commands.recv().await.is_none(), "commands closed");
    input.push_audio(&[0.1; 320]);
    assert_eq!(model.heard.len(), heard, "audio no longer goes anywhere");
}

// ---- the audio path --------------------------------------------------------------------

#[test]
fn pushing_audio_to_the_model_allocates_nothing_once_running() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (h, model) = realtime_harness(
            agent("x"),
            Beside::default(),
            SessionOptions::default(),
            None,
        )
        .await;
        let input = h.session.input();
        let mic = vec![0.01f32; 320];
        for _ in 0..10 {
            input.push_audio(&mic);
        }
        alloc::start();
        for _ in 0..50 {
            input.push_audio(&mic);
        }
        let allocations = alloc::stop();
        assert_eq!(allocations, 0);
        assert!(model.heard.len() > 20_000);
    });
}
