//! LLM providers: implementations of [`crate::providers::Llm`] for real services.
//!
//! [`openai`] speaks OpenAI's Chat Completions with SSE streaming, which OpenAI and most other
//! services (Groq, Together, xAI, Cerebras) and the LAN servers (Ollama, llama.cpp server,
//! vLLM) all accept, so one implementation with a configurable base URL covers them.
//! [`anthropic`] speaks Anthropic's Messages API and [`gemini`] Google's Gemini
//! `streamGenerateContent`, each streaming with tool use. They share one settings type
//! ([`HttpLlmConfig`]), the sending with retries and the stream-reading task (a private module);
//! [`sse`] decodes the event streams all three answer with.

pub mod anthropic;
mod client;
pub mod gemini;
pub mod openai;
pub mod sse;

pub use anthropic::AnthropicLlm;
pub use client::{HttpLlmConfig, HttpLlmError};
pub use gemini::GeminiLlm;
pub use openai::OpenAiLlm;
