//! Per-turn timings: where the latency of each exchange went.

use std::collections::VecDeque;

use serde::Serialize;

/// One turn's timeline, in seconds since the session started (`None`: did not happen).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnMetrics {
    /// Turn number, from 1.
    pub turn: u64,
    /// The user stopped speaking (VAD).
    pub user_speech_end: Option<f64>,
    /// The turn detector's probability used for the decision.
    pub eou_probability: Option<f32>,
    /// The last final transcript of the turn arrived.
    pub stt_final: Option<f64>,
    /// The end-of-utterance decision closed the turn.
    pub eou_decision: Option<f64>,
    /// The LLM request was sent.
    pub llm_request: Option<f64>,
    /// The first LLM token arrived.
    pub llm_first_token: Option<f64>,
    /// The first tool call arrived.
    pub first_tool_call: Option<f64>,
    /// The first sentence of the reply was handed to TTS (what the sentence segmenter adds to
    /// the first token's time).
    pub tts_request: Option<f64>,
    /// The first TTS audio arrived.
    pub tts_first_byte: Option<f64>,
    /// The first sample of the reply was handed to the transport.
    pub first_sample_played: Option<f64>,
    /// The reply was interrupted.
    pub interrupted: Option<f64>,
}

/// The last turns, for the debug endpoint.
#[derive(Debug, Clone)]
pub struct MetricsRing {
    turns: VecDeque<TurnMetrics>,
    capacity: usize,
}

impl MetricsRing {
    /// Keeps the last `capacity` turns.
    pub fn new(capacity: usize) -> Self {
        Self {
            turns: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds a finished turn, dropping the oldest beyond capacity.
    pub fn push(&mut self, t: TurnMetrics) {
        if self.turns.len() == self.capacity {
            self.turns.pop_front();
        }
        self.turns.push_back(t);
    }

    /// Oldest first.
    pub fn turns(&self) -> impl Iterator<Item = &TurnMetrics> {
        self.turns.iter()
    }
}

impl TurnMetrics {
    /// Logs the turn as one structured line.
    pub fn log(&self) {
        let ms = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => ((b - a) * 1000.0).round() as i64,
            _ => -1,
        };
        tracing::info!(
            target: "hark::turn",
            turn = self.turn,
            eou_probability = self.eou_probability.map(f64::from).unwrap_or(-1.0),
            eou_wait_ms = ms(self.stt_final, self.eou_decision),
            llm_ttft_ms = ms(self.llm_request, self.llm_first_token),
            segment_ms = ms(self.llm_first_token, self.tts_request),
            tts_ttfb_ms = ms(self.tts_request, self.tts_first_byte),
            speech_end_to_playback_ms = ms(self.user_speech_end, self.first_sample_played),
            interrupted = self.interrupted.is_some(),
            "turn"
        );
    }
}
