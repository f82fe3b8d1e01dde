//! Agents: who the device is (instructions), what it can do (tools), and what happens when it
//! takes over or hands over a conversation.
//!
//! An [`Agent`] is a trait so Rust code can write agents with state and hooks; agents defined in
//! `hark.toml` (`[agent]`) implement it too. A tool may return another agent to hand the
//! conversation over ([`tool::ToolOutput::Handoff`]); the session then switches instructions
//! and tools mid-conversation.

pub mod builtin;
pub mod configured;
pub mod context;
pub mod mcp;
pub mod schema;
pub mod tool;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;

use crate::session::SessionHandle;
pub use builtin::{builtin_tool, builtin_tool_names, BuiltinTool};
pub use configured::{ConfiguredAgent, ConfiguredAgentError};
pub use context::{
    ChatContent, ChatContext, ChatItem, ChatMessage, ChatRole, ContextError, CopyOptions,
    FunctionCall, FunctionCallOutput, ImageContent, IntoContent,
};
pub use schema::{parameters_schema, FnTool, NoArgs, SchemaError};
pub use tool::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};

/// A conversational agent: instructions for the LLM, tools it may call, and hooks run when it
/// starts or stops being the session's active agent.
#[async_trait]
pub trait Agent: Send + Sync {
    /// The system instructions given to the LLM while this agent is active.
    fn instructions(&self) -> String;

    /// The tools the LLM may call while this agent is active.
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        Vec::new()
    }

    /// Runs when this agent becomes active (session start or hand-off); typically greets.
    async fn on_enter(&self, _session: &SessionHandle) {}

    /// Runs when this agent stops being active (hand-off or session close).
    async fn on_exit(&self, _session: &SessionHandle) {}
}
