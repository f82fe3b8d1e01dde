//! The conversation engine on a paused clock, with scripted providers: every timing rule of
//! the spec (end-of-utterance waits, barge-in, false-interruption resume, wake-up timer) is
//! checked to the millisecond, and whole conversations are checked event by event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::{Agent, Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use hark::providers::{LlmEvent, SttEvent, ToolCallRequest};
use hark::session::{
    AgentState, EouConfig, EouMode, InterruptConfig, InterruptMode, SessionEvent, SessionOptions,
    UserInput, WakeUp,
};
use hark::transport::{CallControl, CallError};
use serde_json::{json, Value};
use tokio::time::Instant;

mod support;
use support::scripted::*;

// ---- end of utterance ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn default_eou_waits_max_when_the_turn_detector_is_unsure() {
    let mut h = quiet(SessionOptions::default()).await;
    h.user_says("what time is it", 0.3).await;
    let t = h.until(turn_text).await;
    assert_eq!(t, "what time is it");
    assert_eq!(h.elapsed_ms(), 800);
}

#[tokio::test(start_paused = true)]
async fn default_eou_waits_min_when_the_turn_detector_is_sure() {
    let mut h = quiet(SessionOptions::default()).await;
    h.user_says("what time is it", 0.85).await;
    h.until(turn_text).await;
    assert_eq!(h.elapsed_ms(), 500);
}

#[tokio::test(start_paused = true)]
async fn adaptive_eou_slides_with_the_probability() {
    let options = SessionOptions {
        eou: EouConfig {
            mode: EouMode::Adaptive,
            min_max_speech_wait_timeout: [0.5, 1.5],
        },
        ..SessionOptions::default()
    };
    let mut h = quiet(options).await;
    h.user_says("what time is it", 0.25).await;
    h.until(turn_text).await;
    assert_eq!(h.elapsed_ms(), 1250);
}

#[tokio::test(start_paused = true)]
async fn continued_speech_cancels_the_wait_and_the_transcripts_accumulate() {
    let mut h = quiet(SessionOptions::default()).await;
    h.user_says("book a table", 0.2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Before the 0.8 s wait ends the user goes on.
    h.user_says("for two people", 0.9).await;
    let t = h.until(turn_text).await;
    assert_eq!(t, "book a table for two people");
    assert_eq!(h.elapsed_ms(), 600 + 500);
}

#[tokio::test(start_paused = true)]
async fn speech_that_resumes_and_ends_without_words_still_lets_the_turn_end() {
    // A cough after the question: the STT finalises it as an empty transcript (Deepgram
    // answers every Finalize). The turn must still end, from that empty final.
    let mut h = quiet(SessionOptions::default()).await;
    h.user_says("is the pool open", 0.9).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    input.user(UserInput::SpeechEnded);
    input.user(UserInput::TurnProbability(0.9));
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.stt
        .send(SttEvent::Final {
            text: String::new(),
            confidence: None,
        })
        .await
        .unwrap();
    let t = h.until(turn_text).await;
    assert_eq!(t, "is the pool open");
    assert_eq!(h.elapsed_ms(), 300 + 100 + 500);
}

// ---- a whole exchange ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_turn_goes_from_transcript_to_llm_to_speech_with_change_only_states() {
    let llm = ScriptedLlm::new(vec![vec![text("It is noon. "), text("Anything else?")]]);
    let mut h = harness(
        agent("You tell the time."),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("what time is it", 0.9).await;
    let events = h.events_until_idle().await;
    let states: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::AgentStateChanged { state } => Some(format!("agent:{state:?}")),
            SessionEvent::UserStateChanged { state } => Some(format!("user:{state:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            "user:Speaking",
            "agent:Listening",
            "user:Idle",
            "agent:Idle",
            "agent:Thinking",
            "agent:Speaking",
            "user:Listening",
            "user:Idle",
            "agent:Idle"
        ]
    );
    // The LLM saw the instructions and the user's words; TTS got the reply text.
    let req = &llm.requests()[0];
    let items = req.context.to_json()["items"].clone();
    assert_eq!(items[0]["role"], "system");
    assert_eq!(items[0]["content"][0], "You tell the time.");
    assert_eq!(items[1]["role"], "user");
    assert_eq!(
        h.tts_texts.lock().unwrap().join(" "),
        "It is noon. Anything else?"
    );
    // All of it was played.
    assert!((h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001);
    // The reply joined the history, and the turn's metrics are complete.
    let history = h.session.history(false, false).await.unwrap();
    assert_eq!(
        history.last().unwrap()["content"][0],
        "It is noon. Anything else?"
    );
    let m = events
        .iter()
        .find_map(|e| match e {
            SessionEvent::TurnMetrics(m) => Some(m.clone()),
            _ => None,
        })
        .expect("turn metrics");
    for (name, v) in [
        ("user_speech_end", m.user_speech_end),
        ("stt_final", m.stt_final),
        ("eou_decision", m.eou_decision),
        ("llm_request", m.llm_request),
        ("llm_first_token", m.llm_first_token),
        ("tts_request", m.tts_request),
        ("tts_first_byte", m.tts_first_byte),
        ("first_sample_played", m.first_sample_played),
    ] {
        assert!(v.is_some(), "{name} missing: {m:?}");
    }
    assert!(m.llm_first_token <= m.tts_request && m.tts_request <= m.tts_first_byte);
    assert_eq!(m.eou_probability, Some(0.9));
    assert!(m.eou_decision.unwrap() - m.stt_final.unwrap() >= 0.5);
    assert!(m.interrupted.is_none());
}

// ---- interruptions ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn half_a_second_of_user_speech_interrupts_and_keeps_the_partial_reply() {
    let mut h = speaking(SessionOptions::default()).await;
    let start = Instant::now();
    h.session.input().user(UserInput::SpeechStarted);
    h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
        .await;
    assert_eq!((Instant::now() - start).as_millis(), 500);
    assert!(h.sink.voiced_seconds() < 1.0, "playback stopped early");
    let history = h.session.history(false, false).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["interrupted"], true);
}

#[tokio::test(start_paused = true)]
async fn speech_shorter_than_the_minimum_does_not_interrupt() {
    let mut h = speaking(SessionOptions::default()).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    input.user(UserInput::SpeechEnded);
    let events = h.until_idle().await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::Interrupted)));
    assert!(h.sink.voiced_seconds() > 2.5);
}

#[tokio::test(start_paused = true)]
async fn two_words_of_transcript_interrupt_in_hybrid_and_stt_only_modes_but_one_does_not() {
    for mode in [InterruptMode::Hybrid, InterruptMode::SttOnly] {
        let options = SessionOptions {
            interrupt: InterruptConfig {
                mode,
                ..InterruptConfig::default()
            },
            ..SessionOptions::default()
        };
        let mut h = speaking(options).await;
        h.stt.send(SttEvent::Interim("wait".into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.stt
            .send(SttEvent::Interim("wait stop".into()))
            .await
            .unwrap();
        let start = Instant::now();
        h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
            .await;
        assert_eq!(Instant::now(), start, "{mode:?}: at the second word");
    }
}

#[tokio::test(start_paused = true)]
async fn vad_only_mode_ignores_words() {
    let options = SessionOptions {
        interrupt: InterruptConfig {
            mode: InterruptMode::VadOnly,
            ..InterruptConfig::default()
        },
        ..SessionOptions::default()
    };
    let mut h = speaking(options).await;
    h.stt
        .send(SttEvent::Interim("wait stop now".into()))
        .await
        .unwrap();
    let events = h.until_idle().await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::Interrupted)));
}

#[tokio::test(start_paused = true)]
async fn a_non_interruptible_say_plays_to_the_end_and_refuses_unforced_interrupts() {
    let mut h = quiet(SessionOptions::default()).await;
    let line = "Please listen to this important notice in full.";
    let handle = h.session.say(line, false).await.unwrap();
    h.agent_state(AgentState::Speaking).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    h.stt
        .send(SttEvent::Interim("stop talking now".into()))
        .await
        .unwrap();
    assert_eq!(
        h.session.interrupt(false).await.unwrap(),
        Err(hark::session::NotInterruptible)
    );
    handle.wait().await;
    assert!(!handle.interrupted());
    assert!((h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001);
    // Forcing works on the next one.
    let handle = h.session.say(line, false).await.unwrap();
    h.agent_state(AgentState::Speaking).await;
    assert_eq!(h.session.interrupt(true).await.unwrap(), Ok(()));
    assert!(handle.interrupted());
}

/// Options that pause on a possible false interruption instead of stopping.
fn resuming() -> SessionOptions {
    SessionOptions {
        interrupt: InterruptConfig {
            resume_on_false_interrupt: true,
            ..InterruptConfig::default()
        },
        ..SessionOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_false_interruption_pauses_then_resumes_and_the_reply_completes() {
    let mut h = speaking(resuming()).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    h.until(|e| matches!(e, SessionEvent::SpeechPaused).then_some(()))
        .await;
    let paused_at = Instant::now();
    input.user(UserInput::SpeechEnded); // a cough, no words
    h.until(|e| matches!(e, SessionEvent::SpeechResumed).then_some(()))
        .await;
    assert_eq!((Instant::now() - paused_at).as_millis(), 2000);
    assert_eq!(
        h.sink.voiced_frames_between(paused_at, Instant::now()),
        0,
        "silent while paused"
    );
    let events = h.until_idle().await;
    assert!(!events
        .iter()
        .any(|e| matches!(e, SessionEvent::Interrupted)));
    assert!(h.sink.voiced_seconds() > 2.9, "{}", h.sink.voiced_seconds());
}

#[tokio::test(start_paused = true)]
async fn words_during_a_false_interruption_pause_confirm_it() {
    let mut h = speaking(resuming()).await;
    h.session.input().user(UserInput::SpeechStarted);
    h.until(|e| matches!(e, SessionEvent::SpeechPaused).then_some(()))
        .await;
    h.stt
        .send(SttEvent::Interim("no wait".into()))
        .await
        .unwrap();
    h.until(|e| matches!(e, SessionEvent::Interrupted).then_some(()))
        .await;
}

// ---- replies ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_reply_while_replying_is_dropped_and_returns_the_current_handle() {
    let llm = ScriptedLlm::new(vec![long_answer(), vec![text("second")]]);
    let h = harness(agent("x"), llm.clone(), SessionOptions::default(), None).await;
    let first = h.session.reply("Tell a story.", false, true).await.unwrap();
    let second = h
        .session
        .reply("Say something else.", false, true)
        .await
        .unwrap();
    assert!(first.same(&second));
    first.wait().await;
    assert_eq!(llm.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reply_waits_for_playback_when_asked() {
    let llm = ScriptedLlm::new(vec![vec![text("Hello there, welcome.")]]);
    let h = harness(agent("x"), llm, SessionOptions::default(), None).await;
    let handle = h
        .session
        .reply("Greet the user.", true, true)
        .await
        .unwrap();
    assert!(handle.is_done() && !handle.interrupted());
    assert!(h.tts_seconds() > 0.15);
    assert!((h.sink.voiced_seconds() - h.tts_seconds()).abs() < 0.001);
}

// ---- tools -----------------------------------------------------------------------------

struct Weather {
    spec: ToolSpec,
    calls: Arc<Mutex<Vec<Value>>>,
}

#[async_trait]
impl Tool for Weather {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        self.calls.lock().unwrap().push(args.clone());
        // Both calls of a parallel batch wait here; run serially they would take 2 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match args["city"].as_str() {
            Some("Atlantis") => Err(ToolError::Failed("unknown city".into())),
            Some(city) => Ok(ToolOutput::Json(json!({"city": city, "temp_c": 21}))),
            None => Err(ToolError::InvalidArguments("city missing".into())),
        }
    }
}

fn weather_agent(calls: Arc<Mutex<Vec<Value>>>) -> Arc<dyn Agent> {
    Arc::new(Greeter {
        instructions: "You know the weather.".into(),
        greeting: None,
        tools: vec![Arc::new(Weather {
            spec: ToolSpec {
                name: "get_weather".into(),
                description: "Weather in a city.".into(),
                parameters: json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}),
            },
            calls,
        })],
    })
}

#[tokio::test(start_paused = true)]
async fn parallel_tool_calls_run_together_and_errors_go_back_to_the_llm() {
    let calls = Arc::default();
    let llm = ScriptedLlm::new(vec![
        vec![
            call("c1", "get_weather", json!({"city": "Paris"})),
            call("c2", "get_weather", json!({"city": "Atlantis"})),
        ],
        vec![text("Paris is 21 degrees; I don't know Atlantis.")],
    ]);
    let mut h = harness(
        weather_agent(Arc::clone(&calls)),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("weather in paris and atlantis", 0.9).await;
    h.until(turn_text).await;
    let asked = Instant::now();
    h.agent_state(AgentState::Speaking).await;
    assert_eq!(
        (Instant::now() - asked).as_millis(),
        1000,
        "both tools ran at once"
    );
    assert_eq!(calls.lock().unwrap().len(), 2);
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].tools[0].name, "get_weather");
    let items = reqs[1].context.to_json()["items"]
        .as_array()
        .unwrap()
        .clone();
    let outputs: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["call_id"], "c1");
    assert_eq!(outputs[0]["is_error"], false);
    assert!(outputs[0]["output"].as_str().unwrap().contains("21"));
    assert_eq!(outputs[1]["call_id"], "c2");
    assert_eq!(outputs[1]["is_error"], true);
    assert_eq!(outputs[1]["output"], "unknown city");
}

#[tokio::test(start_paused = true)]
async fn tool_rounds_stop_at_the_depth_limit() {
    let calls = Arc::default();
    let again = || vec![call("c", "get_weather", json!({"city": "Oslo"}))];
    let llm = ScriptedLlm::new(vec![again(), again(), again(), again()]);
    let options = SessionOptions {
        max_tool_depth: 3,
        ..SessionOptions::default()
    };
    let mut h = harness(
        weather_agent(Arc::clone(&calls)),
        llm.clone(),
        options,
        None,
    )
    .await;
    h.user_says("weather forever", 0.9).await;
    h.until(turn_text).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(llm.requests().len(), 3);
    assert_eq!(calls.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn unknown_tools_and_bad_arguments_are_reported_to_the_llm() {
    let calls = Arc::default();
    let llm = ScriptedLlm::new(vec![
        vec![
            call("a", "launch_rockets", json!({})),
            LlmEvent::ToolCall(ToolCallRequest {
                call_id: "b".into(),
                name: "get_weather".into(),
                arguments: "{not json".into(),
            }),
        ],
        vec![text("Sorry.")],
    ]);
    let mut h = harness(
        weather_agent(calls),
        llm.clone(),
        SessionOptions::default(),
        None,
    )
    .await;
    h.user_says("do things", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    let items = llm.requests()[1].context.to_json()["items"]
        .as_array()
        .unwrap()
        .clone();
    let outputs: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs[0]["output"], "no tool named \"launch_rockets\"");
    assert!(outputs[1]["output"]
        .as_str()
        .unwrap()
        .starts_with("invalid arguments"));
}

struct HandOff {
    spec: ToolSpec,
    to: Arc<dyn Agent>,
}

#[async_trait]
impl Tool for HandOff {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, _args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::Handoff(
            self.to.clone(),
            "Transferred to billing.".into(),
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_returning_an_agent_hands_the_conversation_over() {
    let billing: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You are the billing agent.".into(),
        greeting: Some("Billing here, how can I help?".into()),
        tools: Vec::new(),
    });
    let front: Arc<dyn Agent> = Arc::new(Greeter {
        instructions: "You are the front desk.".into(),
        greeting: None,
        tools: vec![Arc::new(HandOff {
            spec: ToolSpec {
                name: "to_billing".into(),
                description: "Hand over to billing.".into(),
                parameters: json!({"type":"object","properties":{}}),
            },
            to: billing,
        })],
    });
    let llm = ScriptedLlm::new(vec![
        vec![call("h", "to_billing", json!({}))],
        vec![text("Your bill is paid.")],
    ]);
    let mut h = harness(front, llm.clone(), SessionOptions::default(), None).await;
    h.user_says("a question about my bill", 0.9).await;
    h.until(|e| matches!(e, SessionEvent::AgentSwitched).then_some(()))
        .await;
    h.agent_state(AgentState::Speaking).await;
    h.agent_state(AgentState::Idle).await;
    assert_eq!(
        h.tts_texts.lock().unwrap().concat(),
        "Billing here, how can I help?"
    );
    h.user_says("is it paid", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    let reqs = llm.requests();
    let items = reqs[1].context.to_json()["items"].clone();
    assert_eq!(items[0]["content"][0], "You are the billing agent.");
    assert!(reqs[1].tools.is_empty(), "the billing agent has no tools");
}

// ---- wake-up timer ---------------------------------------------------------------------

#[derive(Default)]
struct Phone(Mutex<Vec<String>>);

#[async_trait]
impl CallControl for Phone {
    async fn hangup(&self, reason: &str) -> Result<(), CallError> {
        self.0.lock().unwrap().push(reason.into());
        Ok(())
    }
    async fn transfer(&self, target: &str) -> Result<(), CallError> {
        Err(CallError::Failed(format!("{target} is busy")))
    }
    async fn send_dtmf(&self, _digits: &str) -> Result<(), CallError> {
        Err(CallError::Unsupported)
    }
}

#[tokio::test(start_paused = true)]
async fn the_wake_up_timer_reprompts_then_says_goodbye_and_hangs_up() {
    let phone = Arc::new(Phone::default());
    let options = SessionOptions {
        wake_up: Some(WakeUp {
            after: Duration::from_secs(10),
            prompt: Some("Are you still there?".into()),
            max_prompts: 2,
            goodbye: Some("Goodbye.".into()),
        }),
        ..SessionOptions::default()
    };
    let mut h = harness(
        agent("x"),
        ScriptedLlm::new(vec![]),
        options,
        Some(phone.clone()),
    )
    .await;
    let mut fired = Vec::new();
    for _ in 0..3 {
        h.until(|e| matches!(e, SessionEvent::WakeUp).then_some(()))
            .await;
        fired.push(h.elapsed_ms());
    }
    // 10 s of silence, then 10 s after each prompt finished playing (0.2 s each).
    assert_eq!(fired, [10_000, 20_200, 30_400]);
    let session = h.session;
    session.closed().await;
    assert_eq!(
        h.tts_texts.lock().unwrap().clone(),
        ["Are you still there?", "Are you still there?", "Goodbye."]
    );
    assert_eq!(phone.0.lock().unwrap().clone(), ["wake_up_timeout"]);
}

#[tokio::test(start_paused = true)]
async fn user_speech_rearms_the_wake_up_timer_and_resets_the_prompts() {
    let options = SessionOptions {
        wake_up: Some(WakeUp {
            after: Duration::from_secs(10),
            prompt: Some("Hello?".into()),
            max_prompts: 1,
            goodbye: None,
        }),
        ..SessionOptions::default()
    };
    let mut h = quiet(options).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let input = h.session.input();
    input.user(UserInput::SpeechStarted);
    input.user(UserInput::SpeechEnded);
    h.until(|e| matches!(e, SessionEvent::WakeUp).then_some(()))
        .await;
    assert_eq!(h.elapsed_ms(), 18_000);
}

#[tokio::test(start_paused = true)]
async fn close_is_idempotent_and_ends_in_closing() {
    let mut h = quiet(SessionOptions::default()).await;
    h.session.close().await;
    h.session.close().await;
    h.agent_state(AgentState::Closing).await;
    assert!(h.session.say("hello", true).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn hangup_ends_the_call_with_its_reason_and_closes_the_session() {
    let phone = Arc::new(Phone::default());
    let mut h = harness(
        agent("x"),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        Some(phone.clone()),
    )
    .await;
    h.session.hangup("manual_hangup").await;
    h.agent_state(AgentState::Closing).await;
    assert_eq!(phone.0.lock().unwrap().clone(), ["manual_hangup"]);
    assert!(h.session.say("hello", true).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn transfer_needs_a_call_and_reports_what_the_call_said() {
    let h = quiet(SessionOptions::default()).await;
    assert_eq!(
        h.session.transfer("sip:desk@pbx").await,
        Err(hark::session::SessionError::Call(CallError::Unsupported))
    );
    let phone = Arc::new(Phone::default());
    let h = harness(
        agent("x"),
        ScriptedLlm::new(vec![]),
        SessionOptions::default(),
        Some(phone),
    )
    .await;
    // This phone's transfers fail: the failure comes back to the caller.
    assert_eq!(
        h.session.transfer("sip:desk@pbx").await,
        Err(hark::session::SessionError::Call(CallError::Failed(
            "sip:desk@pbx is busy".into()
        )))
    );
}
