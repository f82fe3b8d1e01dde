//! Which kind of pipeline a set of components makes (the spec's `build_pipeline_config`).

use serde::Serialize;

/// The pipeline's mode, from the components present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineMode {
    /// A speech-to-speech model does the talking.
    Realtime,
    /// VAD → STT → turn detector → LLM → TTS.
    FullCascading,
    /// Text in (no STT), speech out.
    LlmTtsOnly,
    /// Speech in, text out (no TTS).
    SttLlmOnly,
    /// Text in, text out.
    LlmOnly,
    /// Speech in, speech out, no LLM (echo-style pipelines).
    SttTtsOnly,
    /// Transcription only.
    SttOnly,
    /// Speech out only.
    TtsOnly,
    /// Anything else, e.g. STT+LLM+TTS without VAD or turn detector.
    PartialCascading,
}

/// How a realtime model is combined with external components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RealtimeMode {
    /// The model hears and speaks.
    FullS2s,
    /// External STT feeds the model text; the model speaks.
    HybridStt,
    /// The model hears; external TTS speaks its text.
    HybridTts,
    /// External STT and TTS; the model only thinks (not realtime).
    LlmOnly,
}

/// Which components a session has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Components {
    /// Speech-to-text.
    pub stt: bool,
    /// A text LLM (a realtime model counts as one too).
    pub llm: bool,
    /// Text-to-speech.
    pub tts: bool,
    /// Voice activity detection.
    pub vad: bool,
    /// A turn detector.
    pub turn_detector: bool,
    /// A speech-to-speech model.
    pub realtime: bool,
}

/// The mode a session runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PipelineConfig {
    /// The pipeline mode.
    pub pipeline_mode: PipelineMode,
    /// The realtime sub-mode, with a realtime model.
    pub realtime_mode: Option<RealtimeMode>,
    /// Whether audio goes to the realtime model.
    pub is_realtime: bool,
}

impl PipelineConfig {
    /// The spec's decision table; `forced` is an explicit realtime mode from config (trusted).
    pub fn detect(c: Components, forced: Option<RealtimeMode>) -> PipelineConfig {
        let llm = c.llm || c.realtime;
        let realtime_mode = c.realtime.then(|| {
            forced.unwrap_or(match (c.stt, c.tts) {
                (true, true) => RealtimeMode::LlmOnly,
                (true, false) => RealtimeMode::HybridStt,
                (false, true) => RealtimeMode::HybridTts,
                (false, false) => RealtimeMode::FullS2s,
            })
        });
        let is_realtime = realtime_mode.is_some_and(|m| m != RealtimeMode::LlmOnly);
        let pipeline_mode = if is_realtime {
            PipelineMode::Realtime
        } else if c.stt && llm && c.tts && c.vad && c.turn_detector {
            PipelineMode::FullCascading
        } else if llm && c.tts && !c.stt {
            PipelineMode::LlmTtsOnly
        } else if c.stt && llm && !c.tts {
            PipelineMode::SttLlmOnly
        } else if llm && !c.stt && !c.tts {
            PipelineMode::LlmOnly
        } else if c.stt && c.tts && !llm {
            PipelineMode::SttTtsOnly
        } else if c.stt && !llm && !c.tts {
            PipelineMode::SttOnly
        } else if c.tts && !llm && !c.stt {
            PipelineMode::TtsOnly
        } else {
            PipelineMode::PartialCascading
        };
        PipelineConfig {
            pipeline_mode,
            realtime_mode,
            is_realtime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(stt: bool, llm: bool, tts: bool, vad: bool, turn: bool) -> PipelineMode {
        let c = Components {
            stt,
            llm,
            tts,
            vad,
            turn_detector: turn,
            realtime: false,
        };
        PipelineConfig::detect(c, None).pipeline_mode
    }

    #[test]
    fn cascading_modes_follow_the_spec_table() {
        use PipelineMode::*;
        assert_eq!(mode(true, true, true, true, true), FullCascading);
        assert_eq!(mode(true, true, true, true, false), PartialCascading);
        assert_eq!(mode(true, true, true, false, false), PartialCascading);
        assert_eq!(mode(false, true, true, true, true), LlmTtsOnly);
        assert_eq!(mode(true, true, false, false, false), SttLlmOnly);
        assert_eq!(mode(false, true, false, false, false), LlmOnly);
        assert_eq!(mode(true, false, true, false, false), SttTtsOnly);
        assert_eq!(mode(true, false, false, false, false), SttOnly);
        assert_eq!(mode(false, false, true, false, false), TtsOnly);
        assert_eq!(mode(false, false, false, false, false), PartialCascading);
    }

    #[test]
    fn realtime_sub_modes_depend_on_external_stt_and_tts() {
        let rt = |stt, tts| {
            PipelineConfig::detect(
                Components {
                    stt,
                    tts,
                    realtime: true,
                    vad: true,
                    ..Components::default()
                },
                None,
            )
        };
        assert_eq!(rt(false, false).realtime_mode, Some(RealtimeMode::FullS2s));
        assert_eq!(rt(true, false).realtime_mode, Some(RealtimeMode::HybridStt));
        assert_eq!(rt(false, true).realtime_mode, Some(RealtimeMode::HybridTts));
        assert_eq!(rt(false, true).pipeline_mode, PipelineMode::Realtime);
        let llm_only = rt(true, true);
        assert_eq!(llm_only.realtime_mode, Some(RealtimeMode::LlmOnly));
        assert!(!llm_only.is_realtime);
        assert_eq!(llm_only.pipeline_mode, PipelineMode::PartialCascading);
        let forced = PipelineConfig::detect(
            Components {
                realtime: true,
                ..Components::default()
            },
            Some(RealtimeMode::HybridTts),
        );
        assert_eq!(forced.realtime_mode, Some(RealtimeMode::HybridTts));
    }
}
