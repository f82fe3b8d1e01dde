//! Config-defined agents: `[agent]` in hark.toml read into session options and tools, every
//! mistake reported with its file, line and key, the built-in call tools against a recording
//! call, and a configured agent driving a whole conversation to a hangup on a paused clock.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark::agent::mcp::McpServerConfig;
use hark::agent::{
    builtin_tool, builtin_tool_names, Agent, ConfiguredAgent, ConfiguredAgentError, ToolContext,
    ToolError, ToolOutput,
};
use hark::config::{AgentConfig, Config, ConfigError};
use hark::session::{AgentState, EouMode, InterruptMode, SessionOptions};
use hark::transport::{CallControl, CallError};
use serde_json::json;
use tokio::time::Instant;

mod support;
use support::scripted::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("hark.toml"))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

// ---- reading [agent] -------------------------------------------------------------------

const FULL: &str = r#"
[agent]
instructions = """
You are the front desk of the Grand Hotel.
Answer in one or two sentences."""
greeting = "Grand Hotel, how can I help?"
builtin_tools = ["end_call", "transfer_call", "send_dtmf"]
max_tool_depth = 3
tool_timeout = 12.5
max_context_items = 40

[agent.eou]
mode = "adaptive"
min_speech_wait = 0.3
max_speech_wait = 1.2

[agent.interrupt]
mode = "vad_only"
min_duration = 0.7
min_words = 3
false_interrupt_pause = 1.5
resume_on_false_interrupt = true

[agent.wake_up]
after = 15
prompt = "Are you still there?"
max_prompts = 2
goodbye = "Goodbye."

[[agent.webhooks]]
name = "book_room"
description = "Book a room."
url = "https://hooks.example.com/${HARK_TEST_CA_PATH}"
parameters = { type = "object", properties = { nights = { type = "integer" } }, required = ["nights"] }
headers = { Authorization = "Bearer ${HARK_TEST_CA_TOKEN}" }
timeout_s = 5
method = "PUT"

[[agent.mcp_servers]]
kind = "mcp_http"
url = "https://tools.example.com/mcp"

[[agent.mcp_servers]]
kind = "mcp_stdio"
command = "/usr/local/bin/weather-mcp"
args = ["--units", "metric"]
env = { WEATHER_KEY = "${HARK_TEST_CA_TOKEN}" }
"#;

#[test]
fn a_full_agent_section_becomes_session_options_and_tools() {
    std::env::set_var("HARK_TEST_CA_PATH", "hook-path-1");
    std::env::set_var("HARK_TEST_CA_TOKEN", "tok-SECRET-1");
    let config = parse(FULL).unwrap();
    let agent = config.agent.as_ref().expect("[agent] read");
    assert!(agent.instructions.starts_with("You are the front desk"));
    assert_eq!(
        agent.greeting.as_deref(),
        Some("Grand Hotel, how can I help?")
    );
    assert_eq!(
        agent.tool_names(),
        ["end_call", "transfer_call", "send_dtmf", "book_room"]
    );

    let o = agent.session_options();
    assert_eq!(o.eou.mode, EouMode::Adaptive);
    assert_eq!(o.eou.min_max_speech_wait_timeout, [0.3, 1.2]);
    assert_eq!(o.interrupt.mode, InterruptMode::VadOnly);
    assert_eq!(o.interrupt.interrupt_min_duration, 0.7);
    assert_eq!(o.interrupt.interrupt_min_words, 3);
    assert_eq!(o.interrupt.false_interrupt_pause_duration, 1.5);
    assert!(o.interrupt.resume_on_false_interrupt);
    let w = o.wake_up.as_ref().unwrap();
    assert_eq!(w.after, Duration::from_secs(15));
    assert_eq!(w.prompt.as_deref(), Some("Are you still there?"));
    assert_eq!(w.max_prompts, 2);
    assert_eq!(w.goodbye.as_deref(), Some("Goodbye."));
    assert_eq!(o.max_tool_depth, 3);
    assert_eq!(o.tool_timeout, Duration::from_millis(12_500));
    assert_eq!(o.max_context_items, Some(40));
    // The output format is not the agent's business.
    let d = SessionOptions::default();
    assert_eq!((o.output_rate, o.frame_ms), (d.output_rate, d.frame_ms));

    // ${VAR} is expanded in webhook and MCP strings like everywhere else...
    let hook = &agent.webhooks[0];
    assert_eq!(hook.url, "https://hooks.example.com/hook-path-1");
    assert_eq!(hook.headers["Authorization"], "Bearer tok-SECRET-1");
    assert_eq!(hook.timeout_s, 5.0);
    let McpServerConfig::Stdio(stdio) = &agent.mcp_servers[1] else {
        panic!("expected the stdio server second");
    };
    assert_eq!(stdio.env["WEATHER_KEY"], "tok-SECRET-1");
    assert_eq!(stdio.args, ["--units", "metric"]);
    // ...and secrets stay out of the config's debug output.
    let debug = format!("{config:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
}

#[test]
fn an_agent_with_only_instructions_takes_the_session_defaults() {
    let config = parse("[agent]\ninstructions = \"Be helpful.\"\n").unwrap();
    let agent = config.agent.unwrap();
    let (o, d) = (agent.session_options(), SessionOptions::default());
    assert_eq!(o.eou, d.eou);
    assert_eq!(o.interrupt, d.interrupt);
    assert_eq!(o.wake_up, None);
    assert_eq!(
        (o.max_tool_depth, o.tool_timeout, o.max_context_items),
        (d.max_tool_depth, d.tool_timeout, d.max_context_items)
    );
    assert!(agent.builtin_tools.is_empty() && agent.webhooks.is_empty());
    // Without the section there is no agent.
    assert!(parse("").unwrap().agent.is_none());
}

#[test]
fn modes_read_in_lowercase_and_in_the_spec_spelling() {
    let c = parse(
        "[agent]\ninstructions = \"x\"\n[agent.eou]\nmode = \"ADAPTIVE\"\n\
         [agent.interrupt]\nmode = \"stt_only\"\n",
    )
    .unwrap();
    let o = c.agent.unwrap().session_options();
    assert_eq!(
        (o.eou.mode, o.interrupt.mode),
        (EouMode::Adaptive, InterruptMode::SttOnly)
    );
    let wake = parse("[agent]\ninstructions = \"x\"\n[agent.wake_up]\nafter = 30\n").unwrap();
    let w = wake.agent.unwrap().wake_up.unwrap();
    assert_eq!((w.max_prompts, w.prompt, w.goodbye), (1, None, None));
}

#[test]
fn voicemail_preemption_and_thinking_audio_reach_the_session() {
    let c = parse(
        "[agent]\ninstructions = \"x\"\npreemptive_generation = true\n\
         [agent.voicemail]\nlisten = 3.5\naction = \"leave_message\"\nmessage = \"Call back.\"\n\
         [agent.thinking_audio]\nfile = \"models/speech/clone-test.wav\"\nvolume = 0.2\n",
    )
    .unwrap();
    let agent = c.agent.unwrap();
    let o = agent.session_options();
    assert!(o.preemptive_generation);
    let vm = o.voicemail.unwrap();
    assert_eq!(vm.listen, Duration::from_millis(3_500));
    assert_eq!(
        vm.action,
        hark::telephony::voicemail::VoicemailAction::LeaveMessage("Call back.".into())
    );
    let thinking = agent.thinking_sound(16_000).unwrap().expect("configured");
    assert_eq!((thinking.clip.rate(), thinking.volume), (16_000, 0.2));
    assert!(!thinking.clip.samples().is_empty());
}

#[test]
fn hold_music_is_loaded_at_the_calls_rate_and_a_missing_sound_names_its_key_and_file() {
    let agent = |extra: &str| {
        parse(&format!(
            "[agent]\ninstructions = \"x\"\n[agent.warm_transfer]\ndestination = \"sip:s@pbx\"\n{extra}"
        ))
        .unwrap()
        .agent
        .unwrap()
    };
    let hold_music = |a: &AgentConfig| a.warm_transfer.as_ref().unwrap().to_options(16_000);

    let fine = agent("hold_music = \"models/speech/clone-test.wav\"\n");
    let music = hold_music(&fine).unwrap().hold_music.expect("configured");
    // clone-test.wav is 4.11 s; resampled to 16 kHz it keeps its length.
    assert_eq!(music.rate(), 16_000);
    assert!((music.samples().len() as f64 / 16_000.0 - 4.11).abs() < 0.01);
    assert_eq!(
        fine.thinking_sound(16_000).unwrap(),
        None,
        "none configured"
    );

    let missing = agent(
        "hold_music = \"no/such/music.wav\"\n[agent.thinking_audio]\nfile = \"no/such/hum.wav\"\n",
    );
    for (err, key, file) in [
        (
            hold_music(&missing).unwrap_err().to_string(),
            "agent.warm_transfer.hold_music: ",
            "no/such/music.wav",
        ),
        (
            missing.thinking_sound(16_000).unwrap_err().to_string(),
            "agent.thinking_audio.file: ",
            "no/such/hum.wav",
        ),
    ] {
        assert!(err.starts_with(key) && err.contains(file), "{err}");
    }
}

#[test]
fn a_voicemail_message_goes_with_leave_message_only() {
    let msg =
        error("[agent]\ninstructions = \"x\"\n[agent.voicemail]\naction = \"leave_message\"\n");
    assert!(
        msg.starts_with("hark.toml:4: agent.voicemail.action: \"leave_message\" needs"),
        "{msg}"
    );
    assert!(msg.contains("leave_message"), "{msg}");
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.voicemail]\naction = \"ring\"\n");
    assert!(
        msg.starts_with("hark.toml:4: agent.voicemail.action"),
        "{msg}"
    );
}

// ---- mistakes, each on its line -------------------------------------------------------

#[test]
fn missing_instructions_are_named_on_the_section_line() {
    let msg = error("[listen.vad]\nthreshold = 0.5\n\n[agent]\ngreeting = \"Hi\"\n");
    assert_eq!(msg, "hark.toml:4: agent: missing field `instructions`");
    let msg = error("[agent]\ninstructions = \"  \"\n");
    assert!(
        msg.starts_with("hark.toml:2: agent.instructions: must not be empty"),
        "{msg}"
    );
}

#[test]
fn an_unknown_builtin_tool_lists_the_valid_ones() {
    let msg = error(
        "[agent]\ninstructions = \"x\"\nbuiltin_tools = [\n  \"end_call\",\n  \"hang_up\",\n]\n",
    );
    assert_eq!(
        msg,
        "hark.toml:5: agent.builtin_tools[1]: unknown built-in tool \"hang_up\"; \
         expected one of end_call, transfer_call, send_dtmf, warm_transfer"
    );
    assert_eq!(
        builtin_tool_names(),
        ["end_call", "transfer_call", "send_dtmf", "warm_transfer"]
    );
}

#[test]
fn a_bad_interrupt_or_eou_mode_lists_the_choices() {
    let msg = error("[agent]\ninstructions = \"x\"\n\n[agent.interrupt]\nmode = \"vad\"\n");
    assert_eq!(
        msg,
        "hark.toml:5: agent.interrupt.mode: unknown interrupt mode \"vad\"; \
         expected one of \"hybrid\", \"vad_only\", \"stt_only\""
    );
    let msg = error("[agent]\ninstructions = \"x\"\neou = { mode = \"fast\" }\n");
    assert!(
        msg.starts_with("hark.toml:3: agent.eou.mode: unknown EOU mode \"fast\""),
        "{msg}"
    );
}

#[test]
fn eou_and_interrupt_values_get_the_session_messages_at_their_key() {
    let msg = error(
        "[agent]\ninstructions = \"x\"\n[agent.eou]\nmin_speech_wait = 0.9\nmax_speech_wait = 0.8\n",
    );
    assert_eq!(
        msg,
        "hark.toml:4: agent.eou.min_speech_wait: \
         min_speech_wait_timeout must be less than max_speech_wait_timeout"
    );
    // Equal is not less.
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.eou]\nmin_speech_wait = 0.8\n");
    assert!(
        msg.starts_with("hark.toml:4: agent.eou.min_speech_wait: min_speech_wait_timeout must"),
        "{msg}"
    );
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.eou]\n\nmax_speech_wait = -1\n");
    assert_eq!(
        msg,
        "hark.toml:5: agent.eou.max_speech_wait: \
         min_max_speech_wait_timeout values must be greater than 0"
    );
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.interrupt]\nmin_words = 0\n");
    assert_eq!(
        msg,
        "hark.toml:4: agent.interrupt.min_words: interrupt_min_words must be greater than 0"
    );
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.interrupt]\nmin_duration = 0\n");
    assert_eq!(
        msg,
        "hark.toml:4: agent.interrupt.min_duration: interrupt_min_duration must be greater than 0"
    );
    let msg =
        error("[agent]\ninstructions = \"x\"\n[agent.interrupt]\nfalse_interrupt_pause = -2\n");
    assert!(
        msg.starts_with("hark.toml:4: agent.interrupt.false_interrupt_pause: false_interrupt_pause_duration must be greater than 0"),
        "{msg}"
    );
}

#[test]
fn other_out_of_range_values_name_their_key() {
    for (text, want) in [
        (
            "max_tool_depth = 0",
            "hark.toml:3: agent.max_tool_depth: expected at least 1",
        ),
        (
            "tool_timeout = 0",
            "hark.toml:3: agent.tool_timeout: expected a positive number of seconds",
        ),
        (
            "max_context_items = 0",
            "hark.toml:3: agent.max_context_items: expected at least 1",
        ),
        (
            "greeting = \"\"",
            "hark.toml:3: agent.greeting: must not be empty",
        ),
        (
            "wake_up = { after = 0 }",
            "hark.toml:3: agent.wake_up.after: expected a positive number of seconds",
        ),
        (
            "wake_up = { after = 5, prompt = \"Hello?\", max_prompts = 0 }",
            "hark.toml:3: agent.wake_up.max_prompts: expected at least 1",
        ),
    ] {
        let msg = error(&format!("[agent]\ninstructions = \"x\"\n{text}\n"));
        assert!(msg.starts_with(want), "{text}: {msg}");
    }
}

#[test]
fn duplicate_tool_names_are_refused_where_the_second_one_is() {
    let msg = error(
        r#"[agent]
instructions = "x"
builtin_tools = ["end_call"]

[[agent.webhooks]]
name = "end_call"
url = "https://example.com/hook"
parameters = { type = "object" }
"#,
    );
    assert_eq!(
        msg,
        "hark.toml:6: agent.webhooks[0].name: the tool name \"end_call\" is already used by \
         agent.builtin_tools[0]; tool names must be unique"
    );
    let msg = error(
        r#"[agent]
instructions = "x"
[[agent.webhooks]]
name = "lookup"
url = "https://example.com/a"
parameters = { type = "object" }
[[agent.webhooks]]
url = "https://example.com/b"
name = "lookup"
parameters = { type = "object" }
"#,
    );
    assert!(
        msg.starts_with(
            "hark.toml:9: agent.webhooks[1].name: the tool name \"lookup\" is already used by \
             agent.webhooks[0].name"
        ),
        "{msg}"
    );
    let msg =
        error("[agent]\ninstructions = \"x\"\nbuiltin_tools = [\"send_dtmf\", \"send_dtmf\"]\n");
    assert!(
        msg.starts_with("hark.toml:3: agent.builtin_tools[1]: the tool name \"send_dtmf\""),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_refused_with_the_valid_ones() {
    let msg = error("[agent]\ninstructions = \"x\"\nvoice = \"alloy\"\n");
    assert!(msg.starts_with("hark.toml:3: agent"), "{msg}");
    assert!(
        msg.contains("unknown field `voice`") && msg.contains("builtin_tools"),
        "{msg}"
    );
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.wake_up]\nafter = 5\nprompts = 2\n");
    assert!(msg.starts_with("hark.toml:5: agent.wake_up"), "{msg}");
    assert!(
        msg.contains("unknown field `prompts`") && msg.contains("max_prompts"),
        "{msg}"
    );
    let msg = error("[agent]\ninstructions = \"x\"\n[agent.eou]\nmin_wait = 0.2\n");
    assert!(
        msg.starts_with("hark.toml:4: agent.eou") && msg.contains("min_speech_wait"),
        "{msg}"
    );
}

#[test]
fn a_missing_variable_in_a_webhook_header_names_it_but_not_the_value() {
    let msg = error(
        r#"[agent]
instructions = "x"

[[agent.webhooks]]
name = "crm"
url = "https://crm.example.com/hook"
parameters = { type = "object" }
headers = { Authorization = "Bearer sk-PARTIAL-${HARK_TEST_CA_SURELY_UNSET}" }
"#,
    );
    assert_eq!(
        msg,
        "hark.toml:8: agent.webhooks[0].headers.Authorization: \
         environment variable HARK_TEST_CA_SURELY_UNSET is not set"
    );
}

#[test]
fn a_bad_webhook_url_or_header_is_named_without_its_value() {
    std::env::set_var("HARK_TEST_CA_BAD_HEADER", "line\nSECRET");
    let msg = error(
        r#"[agent]
instructions = "x"
[[agent.webhooks]]
name = "crm"
url = "ftp://crm.example.com/SECRET"
parameters = { type = "object" }
"#,
    );
    assert!(
        msg.starts_with("hark.toml:5: agent.webhooks[0].url: invalid URL: scheme \"ftp\""),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "{msg}");
    let msg = error(
        r#"[agent]
instructions = "x"
[[agent.webhooks]]
name = "crm"
url = "https://crm.example.com/hook"
parameters = { type = "object" }
headers = { X-Key = "${HARK_TEST_CA_BAD_HEADER}" }
"#,
    );
    assert!(
        msg.starts_with("hark.toml:7: agent.webhooks[0].headers.X-Key:"),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "{msg}");
    let msg = error(
        r#"[agent]
instructions = "x"
[[agent.webhooks]]
name = "look up"
url = "https://crm.example.com/hook"
parameters = { type = "object" }
"#,
    );
    assert!(
        msg.starts_with("hark.toml:4: agent.webhooks[0].name: invalid tool name \"look up\""),
        "{msg}"
    );
}

#[test]
fn bad_mcp_server_settings_name_their_key() {
    let msg = error(
        r#"[agent]
instructions = "x"
[[agent.mcp_servers]]
kind = "mcp_http"
url = "https://tools.example.com/sse?token=SECRET"
"#,
    );
    assert!(
        msg.starts_with("hark.toml:5: agent.mcp_servers[0].url: the path ends in /sse"),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "{msg}");
    let msg = error(
        r#"[agent]
instructions = "x"
[[agent.mcp_servers]]
kind = "mcp_stdio"
command = "srv"
session_timeout_s = 0
"#,
    );
    assert!(
        msg.starts_with("hark.toml:6: agent.mcp_servers[0].session_timeout_s:"),
        "{msg}"
    );
}

// ---- the built-in tools ---------------------------------------------------------------

/// A call that records what the tools and the session asked of it, and when.
#[derive(Default)]
struct RecordingCall {
    log: Mutex<Vec<(String, Instant)>>,
    fail_with: Option<CallError>,
}

impl RecordingCall {
    fn failing(e: CallError) -> Arc<Self> {
        Arc::new(Self {
            fail_with: Some(e),
            ..Self::default()
        })
    }
    fn record(&self, what: String) -> Result<(), CallError> {
        self.log.lock().unwrap().push((what, Instant::now()));
        self.fail_with.clone().map_or(Ok(()), Err)
    }
    fn requests(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(w, _)| w.clone())
            .collect()
    }
}

#[async_trait]
impl CallControl for RecordingCall {
    async fn hangup(&self, reason: &str) -> Result<(), CallError> {
        self.record(format!("hangup {reason}"))
    }
    async fn transfer(&self, target: &str) -> Result<(), CallError> {
        self.record(format!("transfer {target}"))
    }
    async fn send_dtmf(&self, digits: &str) -> Result<(), CallError> {
        self.record(format!("dtmf {digits}"))
    }
}

fn on(call: &Arc<RecordingCall>) -> ToolContext {
    ToolContext {
        call: Some(call.clone() as Arc<dyn CallControl>),
        ..ToolContext::default()
    }
}

async fn run(
    name: &str,
    args: serde_json::Value,
    cx: &ToolContext,
) -> Result<ToolOutput, ToolError> {
    builtin_tool(name).unwrap().call(args, cx).await
}

#[tokio::test]
async fn transfer_and_dtmf_reach_the_call() {
    let call = Arc::new(RecordingCall::default());
    let out = run(
        "transfer_call",
        json!({"target": "sip:sales@pbx.example.com"}),
        &on(&call),
    )
    .await
    .unwrap();
    let ToolOutput::Text(text) = out else {
        panic!("expected text, got {out:?}")
    };
    assert!(text.contains("sip:sales@pbx.example.com"), "{text}");
    // A number is passed on without its visual separators.
    run(
        "transfer_call",
        json!({"target": "+1 (415) 555-0123"}),
        &on(&call),
    )
    .await
    .unwrap();
    run("send_dtmf", json!({"digits": "1234*#AD"}), &on(&call))
        .await
        .unwrap();
    assert_eq!(
        call.requests(),
        [
            "transfer sip:sales@pbx.example.com",
            "transfer +14155550123",
            "dtmf 1234*#AD"
        ]
    );
}

#[tokio::test]
async fn invalid_arguments_are_refused_before_they_reach_the_call() {
    let call = Arc::new(RecordingCall::default());
    for (name, args) in [
        ("send_dtmf", json!({"digits": "12x"})),
        ("send_dtmf", json!({"digits": "1 2"})),
        ("send_dtmf", json!({"digits": ""})),
        ("send_dtmf", json!({"digits": "1".repeat(33)})),
        ("send_dtmf", json!({"digits": 5})),
        ("send_dtmf", json!({})),
        ("transfer_call", json!({"target": ""})),
        ("transfer_call", json!({"target": "the manager"})),
        ("transfer_call", json!({})),
    ] {
        let e = run(name, args.clone(), &on(&call)).await.unwrap_err();
        assert!(
            matches!(e, ToolError::InvalidArguments(_)),
            "{name} {args}: {e:?}"
        );
    }
    assert!(call.requests().is_empty(), "{:?}", call.requests());
}

#[tokio::test]
async fn without_a_call_transfer_and_dtmf_say_so() {
    let none = ToolContext::default();
    for (name, args) in [
        ("transfer_call", json!({"target": "201"})),
        ("send_dtmf", json!({"digits": "1"})),
    ] {
        let e = run(name, args, &none).await.unwrap_err();
        let ToolError::Failed(msg) = &e else {
            panic!("expected Failed, got {e:?}")
        };
        assert!(msg.starts_with("this session has no phone call"), "{msg}");
    }
}

#[tokio::test]
async fn call_errors_come_back_as_failures_with_their_text() {
    let busy = RecordingCall::failing(CallError::Failed("486 Busy Here".into()));
    let e = run("transfer_call", json!({"target": "201"}), &on(&busy))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ToolError::Failed("the transfer failed: 486 Busy Here".into())
    );
    let kiosk = RecordingCall::failing(CallError::Unsupported);
    let e = run("send_dtmf", json!({"digits": "9"}), &on(&kiosk))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ToolError::Failed("sending DTMF failed: not supported by this transport".into())
    );
}

#[tokio::test]
async fn end_call_ends_with_the_reason_given_or_the_default() {
    let none = ToolContext::default();
    let out = run("end_call", json!({"reason": "caller said goodbye"}), &none)
        .await
        .unwrap();
    assert!(
        matches!(out, ToolOutput::EndCall(ref r) if r == "caller said goodbye"),
        "{out:?}"
    );
    for args in [json!({}), serde_json::Value::Null, json!({"reason": " "})] {
        let out = run("end_call", args, &none).await.unwrap();
        assert!(
            matches!(out, ToolOutput::EndCall(ref r) if r == "manual_hangup"),
            "{out:?}"
        );
    }
    // It does not act on the call itself: the session hangs up after the last words.
    let call = Arc::new(RecordingCall::default());
    run("end_call", json!({}), &on(&call)).await.unwrap();
    assert!(call.requests().is_empty());
}

// ---- the configured agent ---------------------------------------------------------------

#[tokio::test]
async fn a_configured_agent_has_the_builtins_then_the_webhooks() {
    let config: AgentConfig = parse(
        r#"[agent]
instructions = "Front desk."
builtin_tools = ["send_dtmf", "end_call"]
[[agent.webhooks]]
name = "book_room"
description = "Book a room."
url = "https://example.com/hook"
parameters = { type = "object", properties = { nights = { type = "integer" } } }
"#,
    )
    .unwrap()
    .agent
    .unwrap();
    let agent = ConfiguredAgent::connect(&config).await.unwrap();
    assert_eq!(agent.instructions(), "Front desk.");
    let names: Vec<String> = agent
        .tools()
        .iter()
        .map(|t| t.spec().name.clone())
        .collect();
    assert_eq!(names, ["send_dtmf", "end_call", "book_room"]);
    assert_eq!(agent.tools()[2].spec().description, "Book a room.");
    agent.close().await.unwrap();
}

#[tokio::test]
async fn an_mcp_server_that_cannot_start_is_named_in_the_error() {
    let mut config = AgentConfig::new("x");
    config.mcp_servers =
        toml::from_str::<std::collections::BTreeMap<String, Vec<McpServerConfig>>>(
            "[[s]]\nkind = \"mcp_stdio\"\ncommand = \"/nonexistent/hark-test-mcp\"\n",
        )
        .unwrap()
        .remove("s")
        .unwrap();
    let e = ConfiguredAgent::connect(&config).await.unwrap_err();
    assert!(
        matches!(e, ConfiguredAgentError::Mcp { index: 0, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("agent.mcp_servers[0] (\"/nonexistent/hark-test-mcp\"): could not start"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_configured_agent_greets_then_says_goodbye_and_hangs_up_after_it_played() {
    let config = parse(
        r#"[agent]
instructions = "You are the front desk of the Grand Hotel."
greeting = "Grand Hotel, how can I help?"
builtin_tools = ["end_call", "transfer_call", "send_dtmf"]
"#,
    )
    .unwrap()
    .agent
    .unwrap();
    let agent = Arc::new(ConfiguredAgent::connect(&config).await.unwrap());
    let call = Arc::new(RecordingCall::default());
    let llm = ScriptedLlm::new(vec![vec![
        text("Goodbye, and have a lovely day!"),
        call_event("c1", "end_call", json!({"reason": "caller is done"})),
    ]]);
    let mut h = harness(
        agent,
        llm.clone(),
        config.session_options(),
        Some(call.clone() as Arc<dyn CallControl>),
    )
    .await;

    // The greeting is spoken as the session starts. It may begin before the harness
    // subscribes, so wait for the agent to be idle with audio played (an `Idle` on entering
    // comes before any audio).
    loop {
        h.agent_state(AgentState::Idle).await;
        if h.sink.voiced_seconds() > 0.0 {
            break;
        }
    }
    assert_eq!(
        h.tts_texts.lock().unwrap().clone(),
        ["Grand Hotel, how can I help?"]
    );
    let greeted = h.sink.voiced_seconds();
    assert!((greeted - 0.28).abs() < 0.001, "{greeted}");

    h.user_says("that's all, thanks, bye", 0.9).await;
    h.agent_state(AgentState::Speaking).await;
    let goodbye_started = Instant::now();
    let (sink, tts_texts) = (h.sink.clone(), h.tts_texts.clone());
    h.session.closed().await;

    // The LLM was offered the built-ins.
    let offered: Vec<String> = llm.requests()[0]
        .tools
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(offered, ["end_call", "transfer_call", "send_dtmf"]);
    // The goodbye played in full, then the call was hung up with the LLM's reason.
    assert_eq!(
        tts_texts.lock().unwrap().join(" "),
        "Grand Hotel, how can I help? Goodbye, and have a lovely day!"
    );
    // Scripted TTS makes 10 ms of audio per character; all of it was played.
    let synthesized = tts_texts
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.chars().count())
        .sum::<usize>() as f64
        * 0.01;
    let played = sink.voiced_seconds();
    assert!(
        (played - synthesized).abs() < 0.001,
        "{played} of {synthesized}"
    );
    let goodbye = played - greeted;
    let log = call.log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
    let (what, hung_up_at) = &log[0];
    assert_eq!(what, "hangup caller is done");
    let last_voiced = *sink.0.lock().unwrap().1.last().unwrap();
    assert!(*hung_up_at >= last_voiced);
    assert!(
        (*hung_up_at - goodbye_started).as_secs_f64() >= goodbye - 0.02,
        "hung up {:?} after the goodbye began",
        *hung_up_at - goodbye_started
    );
}

fn call_event(id: &str, name: &str, args: serde_json::Value) -> hark::providers::LlmEvent {
    support::scripted::call(id, name, args)
}
