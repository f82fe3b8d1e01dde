//! Every provider against a local server that speaks its wire protocol, and the fallback
//! chains over them. One test binary: each module is one provider (or the chains), the
//! servers and the log capture they share sit beside them.
#![allow(clippy::result_large_err)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod logs;
#[macro_use]
mod sse_server;
mod stt_support;

mod cascade;
mod check_online;
mod fallback;
mod kiosk;
mod llm_anthropic;
mod llm_gemini;
mod llm_openai;
mod phone;
mod phone_transfer;
mod realtime_gemini;
mod realtime_openai;
mod stt_assemblyai;
mod stt_deepgram;
mod stt_openai;
mod tts_cartesia;
mod tts_elevenlabs;
mod tts_espeak;
mod tts_openai;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;
