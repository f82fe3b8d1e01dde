//! An agent defined in `hark.toml` (`[agent]`): instructions, a greeting, and tools made of
//! the built-in call controls, HTTP webhooks and MCP servers.
//!
//! [`ConfiguredAgent::connect`] builds every tool before the session starts, so a webhook with
//! a bad URL or an MCP server that does not answer stops start-up with an error naming it,
//! rather than leaving the agent without tools its instructions promise (the Python framework
//! fails session start on MCP errors too).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::mcp::{McpError, McpServer};
use super::webhook::{shared_http_client, WebhookError, WebhookTool};
use super::{Agent, Tool};
use crate::config::AgentConfig;
use crate::session::SessionHandle;

/// Why a configured agent could not be built. Messages name the config key of the culprit and
/// never hold header values, environment values or webhook URLs.
#[derive(Debug, thiserror::Error)]
pub enum ConfiguredAgentError {
    /// A webhook's config is invalid, or the HTTP client could not be built.
    #[error("agent.webhooks[{index}]: {source}")]
    Webhook {
        /// Its position in `[[agent.webhooks]]`.
        index: usize,
        /// What went wrong (names the webhook).
        #[source]
        source: WebhookError,
    },
    /// An MCP server could not be started, reached, or did not list its tools.
    #[error("agent.mcp_servers[{index}] ({server}): {source}")]
    Mcp {
        /// Its position in `[[agent.mcp_servers]]`.
        index: usize,
        /// The server's label: the command, or the URL without user and query.
        server: String,
        /// What went wrong.
        #[source]
        source: McpError,
    },
    /// Two tools have the same name (an MCP server's tool clashing with a built-in, a webhook
    /// or another server's tool); the LLM could only ever reach one of them.
    #[error("tool {name:?} of {second} has the same name as a tool of {first}; tool names must be unique")]
    DuplicateTool {
        /// The tool's name.
        name: String,
        /// Where the first tool of that name comes from.
        first: String,
        /// Where the second one comes from.
        second: String,
    },
}

/// An [`Agent`] built from an [`AgentConfig`].
pub struct ConfiguredAgent {
    instructions: String,
    greeting: Option<String>,
    tools: Vec<Arc<dyn Tool>>,
    mcp_servers: Vec<McpServer>,
}

impl std::fmt::Debug for ConfiguredAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredAgent")
            .field("instructions", &self.instructions.len())
            .field("greeting", &self.greeting)
            .field(
                "tools",
                &self
                    .tools
                    .iter()
                    .map(|t| t.spec().name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("mcp_servers", &self.mcp_servers)
            .finish()
    }
}

impl ConfiguredAgent {
    /// Builds the agent: the built-in tools, then the webhooks, then the tools each MCP server
    /// lists (servers are connected one after another, in config order). On any failure the
    /// servers already connected are closed and the error names the culprit.
    pub async fn connect(config: &AgentConfig) -> Result<ConfiguredAgent, ConfiguredAgentError> {
        let mut tools: Vec<Arc<dyn Tool>> = config.builtin_tools.iter().map(|t| t.tool()).collect();
        let mut origin: HashMap<String, String> = tools
            .iter()
            .map(|t| (t.spec().name.clone(), "the built-in tools".to_string()))
            .collect();
        for (index, w) in config.webhooks.iter().enumerate() {
            let webhook = |source| ConfiguredAgentError::Webhook { index, source };
            let client = shared_http_client().map_err(webhook)?;
            let tool = WebhookTool::new(w, client).map_err(webhook)?;
            let tool: Arc<dyn Tool> = Arc::new(tool);
            add_tool(
                &mut tools,
                &mut origin,
                tool,
                format!("agent.webhooks[{index}]"),
            )?;
        }
        let mut servers = Vec::with_capacity(config.mcp_servers.len());
        for (index, server_config) in config.mcp_servers.iter().enumerate() {
            let connected = match McpServer::connect(server_config).await {
                Ok(s) => s,
                Err(source) => {
                    close_all(&servers).await;
                    return Err(ConfiguredAgentError::Mcp {
                        index,
                        server: server_config.label(),
                        source,
                    });
                }
            };
            let here = format!(
                "MCP server {} (agent.mcp_servers[{index}])",
                connected.label()
            );
            servers.push(connected);
            let listed = servers[index].tools();
            for tool in listed {
                if let Err(e) = add_tool(&mut tools, &mut origin, tool, here.clone()) {
                    close_all(&servers).await;
                    return Err(e);
                }
            }
        }
        Ok(ConfiguredAgent {
            instructions: config.instructions.clone(),
            greeting: config.greeting.clone(),
            tools,
            mcp_servers: servers,
        })
    }

    /// The MCP servers this agent's tools come from, e.g. to check they are still connected.
    pub fn mcp_servers(&self) -> &[McpServer] {
        &self.mcp_servers
    }

    /// The greeting said on entering, if any.
    pub fn greeting(&self) -> Option<&str> {
        self.greeting.as_deref()
    }

    /// Closes the MCP servers and waits for them (stdio children are reaped). Idempotent;
    /// dropping the agent also ends them, without waiting. Every server is closed even if one
    /// fails; the first failure is returned.
    pub async fn close(&self) -> Result<(), McpError> {
        let mut first = None;
        for server in &self.mcp_servers {
            if let Err(e) = server.close().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Adds `tool` unless its name is taken; `from` says where it comes from, for the error.
fn add_tool(
    tools: &mut Vec<Arc<dyn Tool>>,
    origin: &mut HashMap<String, String>,
    tool: Arc<dyn Tool>,
    from: String,
) -> Result<(), ConfiguredAgentError> {
    let name = tool.spec().name.clone();
    if let Some(first) = origin.get(&name) {
        return Err(ConfiguredAgentError::DuplicateTool {
            name,
            first: first.clone(),
            second: from,
        });
    }
    origin.insert(name, from);
    tools.push(tool);
    Ok(())
}

async fn close_all(servers: &[McpServer]) {
    for s in servers {
        if let Err(e) = s.close().await {
            tracing::warn!(server = %s.label(), "closing MCP server failed: {e}");
        }
    }
}

#[async_trait]
impl Agent for ConfiguredAgent {
    fn instructions(&self) -> String {
        self.instructions.clone()
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools.clone()
    }

    /// Says the greeting, interruptible, as the Python examples' `on_enter` does.
    async fn on_enter(&self, session: &SessionHandle) {
        if let Some(greeting) = &self.greeting {
            if let Err(e) = session.say(greeting.clone(), true).await {
                tracing::warn!("the greeting could not be said: {e}");
            }
        }
    }
}
