//! Function tools: what the LLM may call, each described by a name, a description and a JSON
//! schema for its arguments.
//!
//! Tools are trait objects so Rust functions, MCP servers, HTTP webhooks and the built-in call
//! controls (end call, transfer, DTMF) look the same to the session.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::Agent;
use crate::session::SessionHandle;
use crate::transport::CallControl;

/// How a tool presents itself to the LLM.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name the LLM calls it by (unique within an agent).
    pub name: String,
    /// What it does, for the LLM; may be empty.
    pub description: String,
    /// JSON schema (an `object`) of the arguments.
    pub parameters: Value,
}

/// What a tool call produced.
#[derive(Clone)]
pub enum ToolOutput {
    /// A JSON result, given back to the LLM as the function output.
    Json(Value),
    /// A text result, given back to the LLM as is.
    Text(String),
    /// Hand the conversation to another agent (its instructions and tools replace the current
    /// ones); the string is the output the LLM sees for this call.
    Handoff(Arc<dyn Agent>, String),
    /// End the session once what the agent is saying has played out (then hang up the call,
    /// if there is one); the string is the reason given to the transport.
    EndCall(String),
    /// A text result the LLM sees, that also ends the reply: no further LLM round (a tool that
    /// took over the conversation, like a warm transfer putting the caller on hold).
    Final(String),
}

impl std::fmt::Debug for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolOutput::Json(v) => f.debug_tuple("Json").field(v).finish(),
            ToolOutput::Text(t) => f.debug_tuple("Text").field(t).finish(),
            ToolOutput::Handoff(_, t) => f.debug_tuple("Handoff").field(t).finish(),
            ToolOutput::EndCall(r) => f.debug_tuple("EndCall").field(r).finish(),
            ToolOutput::Final(t) => f.debug_tuple("Final").field(t).finish(),
        }
    }
}

/// Why a tool call failed. The message goes back to the LLM as the function output, so it
/// must never contain secrets.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ToolError {
    /// The LLM's arguments did not match the schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The tool did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No tool of that name is available to the active agent.
    #[error("no tool named {0:?}")]
    Unknown(String),
}

/// What a running tool may use of its session.
#[derive(Clone, Default)]
pub struct ToolContext {
    /// The call this session runs on, for tools that end, transfer or send DTMF; `None` when
    /// the transport has no call (e.g. a kiosk).
    pub call: Option<Arc<dyn CallControl>>,
    /// The session running the tool, set by the session itself: a slow tool can tell the user
    /// to hold on (`say` from a tool joins the reply in progress instead of cutting it).
    pub session: Option<SessionHandle>,
}

/// A function the LLM may call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Name, description and argument schema.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool with the LLM's arguments (a JSON object).
    async fn call(&self, args: Value, cx: &ToolContext) -> Result<ToolOutput, ToolError>;
}
