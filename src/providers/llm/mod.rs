//! LLM providers: implementations of [`crate::providers::Llm`] for real services.
//!
//! [`openai`] speaks OpenAI's Chat Completions with SSE streaming, which OpenAI and most other
//! services (Groq, Together, xAI, Cerebras) and the LAN servers (Ollama, llama.cpp server,
//! vLLM) all accept, so one implementation with a configurable base URL covers them. [`sse`]
//! decodes the event streams these APIs answer with.

pub mod openai;
pub mod sse;

pub use openai::{OpenAiConfig, OpenAiError, OpenAiLlm};
