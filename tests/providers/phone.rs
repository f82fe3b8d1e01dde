//! The phone endpoint end to end: a real SIP phone (baresip) calls hark and asks a recorded
//! question over G.711; hark's front end and session hear it, the three protocol servers answer,
//! and the phone hears the answer. Then the caller hangs up, or the agent does.

use std::time::Duration;

use hark::config::Config;
use hark::service::phone::{self, PhoneError, PhoneEvent};
use hark::session::{AgentState, SessionEvent};
use hark::transport::sip::HangupReason;
use tokio::sync::{broadcast, oneshot};

use crate::cascade::Concierge;
use crate::common;
use crate::support::sip_peers::{require_peers, Baresip};

const RATE: u32 = 8_000;

/// The endpoint running on `toml`, its events, the switch that stops it, and its SIP address.
pub(crate) async fn start_phone(
    toml: &str,
) -> (
    broadcast::Receiver<PhoneEvent>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), PhoneError>>,
    std::net::SocketAddr,
) {
    let config = Config::parse(toml, "hark.toml".as_ref()).unwrap();
    let (events, mut rx) = broadcast::channel(1024);
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        phone::run(&config, common::store(), events, async {
            let _ = stopped.await;
        })
        .await
    });
    let address = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Ok(PhoneEvent::Ready { address })) => break address,
            Ok(Ok(_)) => {}
            other => panic!("the endpoint did not start: {other:?}"),
        }
    };
    (rx, stop, run, address)
}

/// The caller's microphone: 0.5 s of silence, 1.3 s of a real question, then silence.
pub(crate) fn question() -> hark::audio::Audio {
    let speech = common::speech("beckett.wav").resampled(RATE);
    let mut samples = vec![0.0f32; RATE as usize / 2];
    samples.extend_from_slice(&speech.samples[..(1.3 * RATE as f64) as usize]);
    samples.resize(samples.len() + 10 * RATE as usize, 0.0);
    hark::audio::Audio {
        rate: RATE,
        samples,
    }
}

/// Events until `done` says stop, or a panic after `limit` listing what was seen.
pub(crate) async fn until(
    rx: &mut broadcast::Receiver<PhoneEvent>,
    limit: Duration,
    mut done: impl FnMut(&PhoneEvent) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("not within {limit:?}; the endpoint said {seen:#?}"))
            .unwrap();
        seen.push(format!("{e:?}"));
        if done(&e) {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_asks_a_question_and_hears_the_agents_answer_then_hangs_up() {
    require_peers();
    let concierge = Concierge::start().await;
    let toml = format!(
        "{}\n[sip]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n",
        concierge.toml
    );
    let (mut rx, stop, run, address) = start_phone(&toml).await;
    let mut phone = Baresip::start_with("caller", None, false, Some(&question()));
    phone.command("dial", &format!("sip:agent@{address}"));

    let (mut turn, mut spoke) = (None, false);
    let seen = until(&mut rx, Duration::from_secs(30), |e| match e {
        PhoneEvent::Session {
            event: SessionEvent::UserTurn { text },
            ..
        } => {
            turn = Some(text.clone());
            false
        }
        PhoneEvent::Session {
            event: SessionEvent::AgentStateChanged { state },
            ..
        } => {
            spoke |= *state == AgentState::Speaking;
            spoke && matches!(state, AgentState::Idle | AgentState::Listening)
        }
        _ => false,
    })
    .await;
    assert_eq!(turn.as_deref(), Some("Is the pool open?"), "{seen:#?}");
    assert!(
        seen.iter().any(|e| e.contains("StartOfSpeech")),
        "the call's front end heard the caller: {seen:#?}"
    );

    phone.command("hangup", "");
    let seen = until(&mut rx, Duration::from_secs(10), |e| {
        matches!(e, PhoneEvent::CallEnded { .. })
    })
    .await;
    assert!(
        seen.last()
            .unwrap()
            .contains(&format!("{:?}", HangupReason::Remote)),
        "{seen:#?}"
    );

    // The answer (0.75 s of tone from the voice) reached the phone: its recording of the call
    // holds about that much loud audio (the agent was otherwise silent).
    tokio::task::block_in_place(|| phone.wait_event(&["CALL_CLOSED"], Duration::from_secs(10)));
    let heard = phone.heard();
    assert_eq!(heard.len(), 1, "one call recorded");
    let loud =
        heard[0].samples.iter().filter(|s| s.abs() > 0.05).count() as f64 / heard[0].rate as f64;
    eprintln!("the phone heard {loud:.2} s of loud audio");
    assert!(
        (0.4..1.0).contains(&loud),
        "the phone should have heard the 0.75 s answer once; {loud:.2} s of loud audio"
    );
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// The agent ends the call with its `end_call` tool: its goodbye plays, then hark sends BYE and
/// the phone sees the call close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_says_goodbye_and_hangs_up_with_end_call() {
    require_peers();
    let concierge = Concierge::hanging_up().await;
    let toml = format!(
        "{}\n[sip]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n",
        concierge
            .toml
            .replacen("[agent]\n", "[agent]\nbuiltin_tools = [\"end_call\"]\n", 1)
    );
    let (mut rx, stop, run, address) = start_phone(&toml).await;
    let mut phone = Baresip::start_with("caller", None, false, Some(&question()));
    phone.command("dial", &format!("sip:agent@{address}"));

    let seen = until(&mut rx, Duration::from_secs(30), |e| {
        matches!(e, PhoneEvent::CallEnded { .. })
    })
    .await;
    assert!(
        seen.iter().any(|e| e.contains("end_call")),
        "the agent called end_call: {seen:#?}"
    );
    assert!(
        seen.last()
            .unwrap()
            .contains(&format!("{:?}", HangupReason::Local)),
        "{seen:#?}"
    );
    tokio::task::block_in_place(|| phone.wait_event(&["CALL_CLOSED"], Duration::from_secs(10)));
    // The goodbye played before the BYE.
    let heard = phone.heard();
    let loud =
        heard[0].samples.iter().filter(|s| s.abs() > 0.05).count() as f64 / heard[0].rate as f64;
    assert!(loud > 0.4, "the goodbye was cut: {loud:.2} s of it heard");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// `seconds` of silence: a caller who only presses keys.
fn silence(seconds: f64) -> hark::audio::Audio {
    hark::audio::Audio {
        rate: RATE,
        samples: vec![0.0; (seconds * RATE as f64) as usize],
    }
}

/// The endpoint on `toml` and a silent baresip that has called it; returns once hark reports
/// the call started and baresip reports it established.
async fn call_in(
    toml: &str,
    microphone: &hark::audio::Audio,
) -> (
    broadcast::Receiver<PhoneEvent>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), PhoneError>>,
    Baresip,
) {
    let (mut rx, stop, run, address) = start_phone(toml).await;
    let mut phone = Baresip::start_with("caller", None, false, Some(microphone));
    phone.command("dial", &format!("sip:agent@{address}"));
    until(&mut rx, Duration::from_secs(20), |e| {
        matches!(e, PhoneEvent::CallStarted { .. })
    })
    .await;
    tokio::task::block_in_place(|| {
        phone.wait_event(&["CALL_ESTABLISHED"], Duration::from_secs(10))
    });
    (rx, stop, run, phone)
}

/// The keys in the endpoint's `Dtmf` events until `count` have come.
async fn keys(rx: &mut broadcast::Receiver<PhoneEvent>, count: usize) -> (String, Vec<String>) {
    let mut digits = String::new();
    let seen = until(rx, Duration::from_secs(15), |e| {
        if let PhoneEvent::Dtmf { digit, .. } = e {
            digits.push(*digit);
        }
        digits.chars().count() == count
    })
    .await;
    (digits, seen)
}

/// baresip sends `1024#` as RFC 4733 events: every key reaches the call's DTMF handler in order
/// (the `0` too, which the Python handler drops as falsy), and the entry up to `#` reaches the
/// LLM as the caller's turn, which the agent answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_pressed_on_the_phone_reach_the_handler_in_order_and_the_entry_reaches_the_llm() {
    require_peers();
    let concierge = Concierge::start().await;
    let toml = format!(
        "{}\n[sip]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n",
        concierge.toml
    );
    let (mut rx, stop, run, mut phone) = call_in(&toml, &silence(20.0)).await;
    assert!(
        concierge.llm.received().is_empty(),
        "nobody spoke yet, so the LLM was not asked"
    );

    phone.command("sndcode", "1024#");
    let (digits, seen) = keys(&mut rx, 5).await;
    assert_eq!(digits, "1024#", "{seen:#?}");

    let seen = until(&mut rx, Duration::from_secs(20), |e| {
        matches!(
            e,
            PhoneEvent::Session {
                event: SessionEvent::AgentStateChanged {
                    state: AgentState::Speaking
                },
                ..
            }
        )
    })
    .await;
    let request = crate::sse_server::only_request(&concierge.llm);
    let messages = request.body["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user", "{messages:#?}");
    assert_eq!(last["content"], "The caller typed: 1024", "{seen:#?}");
    assert!(
        tokio::task::block_in_place(|| phone.log()).contains("send DTMF digit: '0'"),
        "baresip sent the keys as events"
    );

    phone.command("hangup", "");
    until(&mut rx, Duration::from_secs(10), |e| {
        matches!(e, PhoneEvent::CallEnded { .. })
    })
    .await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// A sequence mapped in `[agent.dtmf]` acts instead of reaching the LLM: `*9` makes the agent
/// say goodbye and hang up (hark sends BYE; the phone sees the call close after the goodbye).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_key_sequence_says_goodbye_and_ends_the_call() {
    require_peers();
    let concierge = Concierge::start().await;
    let toml = format!(
        "{}\n[agent.dtmf]\n[[agent.dtmf.keys]]\ndigits = \"*9\"\nsay = \"Goodbye.\"\n\
         end_call = true\n\n[sip]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n",
        concierge.toml
    );
    let (mut rx, stop, run, mut phone) = call_in(&toml, &silence(20.0)).await;

    phone.command("sndcode", "*9");
    let (digits, seen) = keys(&mut rx, 2).await;
    assert_eq!(digits, "*9", "{seen:#?}");
    let seen = until(&mut rx, Duration::from_secs(20), |e| {
        matches!(e, PhoneEvent::CallEnded { .. })
    })
    .await;
    assert!(
        seen.last()
            .unwrap()
            .contains(&format!("{:?}", HangupReason::Local)),
        "hark hung up: {seen:#?}"
    );
    tokio::task::block_in_place(|| phone.wait_event(&["CALL_CLOSED"], Duration::from_secs(10)));
    assert!(
        concierge.llm.received().is_empty(),
        "a mapped sequence is not handed to the LLM"
    );
    let said: Vec<String> = concierge
        .speech
        .received()
        .iter()
        .map(|r| r.body["input"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(said.concat().trim(), "Goodbye.");
    let heard = phone.heard();
    let loud =
        heard[0].samples.iter().filter(|s| s.abs() > 0.05).count() as f64 / heard[0].rate as f64;
    assert!(
        loud > 0.4,
        "the goodbye was cut: {loud:.2} s of it heard; {seen:#?}"
    );
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// The agent's `send_dtmf` tool presses keys on the call: they go out as RFC 4733 events and
/// baresip reports receiving each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_send_dtmf_tool_sends_rfc_4733_events_the_phone_receives() {
    require_peers();
    let concierge = Concierge::pressing("407").await;
    let toml = format!(
        "{}\n[sip]\nbind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\n",
        concierge.toml.replacen(
            "[agent]\n",
            "[agent]\nbuiltin_tools = [\"send_dtmf\"]\nmax_tool_depth = 1\n",
            1
        )
    );
    let (mut rx, stop, run, mut phone) = call_in(&toml, &question()).await;
    let seen = until(&mut rx, Duration::from_secs(30), |e| {
        format!("{e:?}").contains("send_dtmf")
    })
    .await;
    tokio::task::block_in_place(|| {
        phone.wait_log("received event: '7' (end=1)", Duration::from_secs(10))
    });
    let log = phone.log();
    let at = |d: char| {
        log.find(&format!("received event: '{d}' (end=1)"))
            .unwrap_or_else(|| panic!("baresip did not receive {d}: {log}\n{seen:#?}"))
    };
    assert!(at('4') < at('0') && at('0') < at('7'), "in order: {log}");
    assert_eq!(log.matches("(end=1)").count(), 3, "once each: {log}");

    phone.command("hangup", "");
    until(&mut rx, Duration::from_secs(10), |e| {
        matches!(e, PhoneEvent::CallEnded { .. })
    })
    .await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}
