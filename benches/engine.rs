//! What the conversation engine itself adds to a turn's latency, with zero-latency scripted
//! providers on a real clock: from the end-of-utterance decision to the LLM request, from the
//! LLM's first token (a complete first sentence) to the TTS request, and from the first TTS
//! audio to its first frame reaching the transport. `cargo bench --bench engine`
//! measures 30 turns; under `cargo test` it runs one turn as a smoke test.

#[path = "../tests/support/scripted.rs"]
mod scripted;

use hark::session::{SessionEvent, SessionOptions};
use scripted::*;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let turns = if full { 30 } else { 1 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (to_llm, to_tts, to_transport) = rt.block_on(async {
        // The first token holds a complete sentence and the start of the next, as LLMs stream.
        let answers = (0..turns)
            .map(|_| vec![text("Sure, it is noon. The"), text(" rest follows.")])
            .collect();
        let mut h = harness(
            agent("x"),
            ScriptedLlm::new(answers),
            SessionOptions::default(),
            None,
        )
        .await;
        let (mut to_llm, mut to_tts, mut to_transport) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..turns {
            h.user_says("hello there", 0.9).await;
            let m = h
                .until(|e| match e {
                    SessionEvent::TurnMetrics(m) => Some(m.clone()),
                    _ => None,
                })
                .await;
            let ms = |a: Option<f64>, b: Option<f64>| (b.unwrap() - a.unwrap()) * 1e3;
            to_llm.push(ms(m.eou_decision, m.llm_request));
            to_tts.push(ms(m.llm_first_token, m.tts_request));
            to_transport.push(ms(m.tts_first_byte, m.first_sample_played));
            h.until_idle().await;
        }
        (to_llm, to_tts, to_transport)
    });
    let report = |name: &str, mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:<52} median {:>7.3} ms   max {:>7.3} ms   ({} turns)",
            v[v.len() / 2],
            v[v.len() - 1],
            v.len()
        );
    };
    report("EOU decision -> LLM request", to_llm);
    report("LLM first token -> first TTS request", to_tts);
    report(
        "first TTS audio -> first frame to the transport",
        to_transport,
    );
}
