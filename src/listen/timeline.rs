//! A recording's listening result: speech segments and turn verdicts, as text or JSON.

use serde::Serialize;

use super::{ListenEvent, TurnEvent};
use crate::listen::vad::VadEventType;

/// One stretch of speech, from the VAD's boundaries (not its delayed event times).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Segment {
    /// Speech began (s).
    pub start: f64,
    /// Speech was last heard (s); the recording's end if it was still going.
    pub end: f64,
    /// Smart Turn's verdict at the pause after this segment, if it was scored.
    pub turn: Option<TurnEvent>,
}

/// What `hark listen` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The recording's name.
    pub source: String,
    /// Its original rate.
    pub sample_rate: u32,
    /// Its length (s).
    pub duration: f64,
    /// Engine per model, e.g. `silero-vad: tract`.
    pub engines: Vec<String>,
    /// Speech segments in order.
    pub segments: Vec<Segment>,
    /// Smart Turn's verdict at each pause.
    pub turns: Vec<TurnEvent>,
    /// Every event, in order.
    pub events: Vec<ListenEvent>,
}

impl Timeline {
    /// Builds segments from the events of one stream.
    pub fn new(
        source: String,
        sample_rate: u32,
        duration: f64,
        engines: Vec<String>,
        events: Vec<ListenEvent>,
    ) -> Self {
        let mut segments: Vec<Segment> = Vec::new();
        let mut open = None;
        let mut turns = Vec::new();
        for e in &events {
            match e {
                ListenEvent::Vad(v) if v.event_type == VadEventType::StartOfSpeech => {
                    open = Some(v.boundary)
                }
                ListenEvent::Vad(v) => {
                    if let Some(start) = open.take() {
                        segments.push(Segment {
                            start,
                            end: v.boundary,
                            turn: None,
                        });
                    }
                }
                // The front end scores a pause right after its end-of-speech event.
                ListenEvent::Turn(t) => {
                    turns.push(*t);
                    if let Some(last) = segments.last_mut() {
                        last.turn = Some(*t);
                    }
                }
            }
        }
        if let Some(start) = open {
            segments.push(Segment {
                start,
                end: duration,
                turn: None,
            });
        }
        Self {
            source,
            sample_rate,
            duration,
            engines,
            segments,
            turns,
            events,
        }
    }

    /// The human-readable timeline.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {:.2} s at {} Hz ({})",
            self.source,
            self.duration,
            self.sample_rate,
            self.engines.join(", ")
        );
        for seg in &self.segments {
            let _ = writeln!(
                s,
                "  speech {:>7.2} - {:>7.2} s  ({:.2} s)",
                seg.start,
                seg.end,
                seg.end - seg.start
            );
            if let Some(t) = seg.turn {
                let _ = writeln!(
                    s,
                    "    pause at {:>6.2} s: end of turn p={:.3}  {}",
                    seg.end,
                    t.probability,
                    if t.complete {
                        "-> turn complete"
                    } else {
                        "-> user still talking"
                    }
                );
            }
        }
        let complete = self.turns.iter().filter(|t| t.complete).count();
        let _ = writeln!(
            s,
            "{} speech segments, {} pauses scored, {} complete turns",
            self.segments.len(),
            self.turns.len(),
            complete
        );
        s
    }
}
