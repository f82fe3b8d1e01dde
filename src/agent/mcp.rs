//! MCP tool servers: tools offered by a Model Context Protocol server, over a child process's
//! stdio or over streamable HTTP, given to the LLM as ordinary [`Tool`]s.
//!
//! MCP is how most third-party integrations (calendars, CRMs, home automation) expose
//! functions today, so an appliance that speaks it gets them without code. [`McpServer::connect`]
//! does the handshake and lists the tools once; each tool keeps the server's `inputSchema` as its
//! parameters and forwards calls as `tools/call`. A server that exits or drops the connection
//! turns later calls into [`ToolError::Failed`], never a panic.
//!
//! In `hark.toml` a server is a table tagged by `kind`:
//!
//! ```toml
//! [[agent.mcp_servers]]
//! kind = "mcp_http"
//! url = "https://tools.example.com/mcp"
//! headers = { Authorization = "Bearer …" }   # values are secret: never logged
//! connect_timeout_s = 10.0                   # optional, default 10
//! read_timeout_s = 300.0                     # optional, default 300
//! session_timeout_s = 5.0                    # optional, default 5
//!
//! [[agent.mcp_servers]]
//! kind = "mcp_stdio"
//! command = "/usr/local/bin/weather-mcp"
//! args = ["--units", "metric"]               # optional
//! env = { WEATHER_API_KEY = "…" }            # optional; values are secret: never logged
//! cwd = "/var/lib/hark"                      # optional
//! session_timeout_s = 5.0                    # optional, default 5
//! ```
//!
//! Only the streamable HTTP transport is spoken; the legacy HTTP+SSE transport (a URL ending in
//! `/sse`) is refused at connect time rather than failing obscurely later.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ContentBlock, ErrorCode, Implementation,
};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceError, ServiceExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::tool::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};

/// Where an MCP server is and how long to wait for it; one entry of an agent's `mcp_servers`.
#[derive(Clone, Deserialize)]
#[serde(tag = "kind")]
pub enum McpServerConfig {
    /// A server reached over streamable HTTP (`kind = "mcp_http"`).
    #[serde(rename = "mcp_http")]
    Http(McpHttpConfig),
    /// A server run as a child process speaking JSON-RPC on its stdio (`kind = "mcp_stdio"`).
    #[serde(rename = "mcp_stdio")]
    Stdio(McpStdioConfig),
}

/// A streamable-HTTP MCP server (upstream `MCPServerHTTP`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpHttpConfig {
    /// The endpoint, e.g. `https://host/mcp`.
    pub url: String,
    /// Sent with every request (typically `Authorization`); values are secrets and are never
    /// logged or put in errors.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait to open a TCP/TLS connection, in seconds.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Longest silence on an open response stream before it is dropped, in seconds (upstream
    /// stores this and never uses it; here it bounds every read).
    #[serde(default = "default_read_timeout_s")]
    pub read_timeout_s: f64,
    /// Longest wait for the answer to any one request (handshake, listing, tool call), in
    /// seconds; a tool call that takes longer gives [`ToolError::Timeout`].
    #[serde(default = "default_session_timeout_s")]
    pub session_timeout_s: f64,
}

/// A stdio MCP server run as a child process (upstream `MCPServerStdio`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpStdioConfig {
    /// The executable (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for the child; values are secrets (API keys) and are never logged.
    /// The child gets these plus only `HOME`, `LOGNAME`, `PATH`, `SHELL`, `TERM` and `USER`
    /// from hark's environment, so hark's own keys do not leak to third-party servers.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the child; hark's own when absent.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Longest wait for the answer to any one request (handshake, listing, tool call), in
    /// seconds; a tool call that takes longer gives [`ToolError::Timeout`].
    #[serde(default = "default_session_timeout_s")]
    pub session_timeout_s: f64,
}

fn default_connect_timeout_s() -> f64 {
    10.0
}
fn default_read_timeout_s() -> f64 {
    300.0
}
fn default_session_timeout_s() -> f64 {
    5.0
}

/// Variables a stdio child inherits from hark (the same safe set the Python MCP SDK passes).
const INHERITED_ENV: [&str; 6] = ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

// Hand-written so header and environment values (secrets) can never reach a log line.
impl std::fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpServerConfig::Http(c) => f
                .debug_struct("McpHttpConfig")
                .field("url", &c.url)
                .field("headers", &c.headers.keys().collect::<Vec<_>>())
                .field("connect_timeout_s", &c.connect_timeout_s)
                .field("read_timeout_s", &c.read_timeout_s)
                .field("session_timeout_s", &c.session_timeout_s)
                .finish(),
            McpServerConfig::Stdio(c) => f
                .debug_struct("McpStdioConfig")
                .field("command", &c.command)
                .field("args", &c.args)
                .field("env", &c.env.keys().collect::<Vec<_>>())
                .field("cwd", &c.cwd)
                .field("session_timeout_s", &c.session_timeout_s)
                .finish(),
        }
    }
}

impl McpServerConfig {
    /// Checks the timeouts, the URL and the headers without connecting, so `hark check` and
    /// config loading catch mistakes before a session starts ([`McpServer::connect`] checks
    /// them again).
    pub fn validate(&self) -> Result<(), McpError> {
        match self {
            McpServerConfig::Http(c) => {
                seconds("connect_timeout_s", c.connect_timeout_s)?;
                seconds("read_timeout_s", c.read_timeout_s)?;
                seconds("session_timeout_s", c.session_timeout_s)?;
                http_label(&c.url)?;
                header_map(&c.headers)?;
            }
            McpServerConfig::Stdio(c) => {
                seconds("session_timeout_s", c.session_timeout_s)?;
            }
        }
        Ok(())
    }

    /// A short name for messages: the command for stdio, the URL without user or query for
    /// HTTP (`(invalid URL)` when it does not parse: it is not shown, it may hold a token).
    pub fn label(&self) -> String {
        match self {
            McpServerConfig::Http(c) => {
                http_label(&c.url).unwrap_or_else(|_| "(invalid URL)".into())
            }
            McpServerConfig::Stdio(c) => format!("{:?}", c.command),
        }
    }
}

/// Why an MCP server could not be connected or shut down. Messages never hold header or
/// environment values.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A timeout in the config is not a positive, finite number of seconds.
    #[error("{field} must be a positive number of seconds, got {value}")]
    InvalidTimeout {
        /// The config field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The URL does not parse or is not http(s).
    #[error("invalid MCP server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL names the legacy HTTP+SSE transport, which hark does not speak.
    #[error(
        "MCP server {url:?} uses the legacy HTTP+SSE transport (path ends in /sse); \
         only streamable HTTP is supported"
    )]
    LegacySse {
        /// The URL as configured.
        url: String,
    },
    /// A header name or value cannot be sent (the value itself is not shown: it is secret).
    #[error("MCP server header {name:?} has an invalid name or value")]
    InvalidHeader {
        /// The header's name.
        name: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("could not build the HTTP client for MCP server {server}: {source}")]
    HttpClient {
        /// The server's label.
        server: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The child process could not be started.
    #[error("could not start MCP server {command:?}: {source}")]
    Spawn {
        /// The command as configured.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The MCP `initialize` handshake failed.
    #[error("MCP handshake with {server} failed: {reason}")]
    Handshake {
        /// The server's label.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// `tools/list` failed.
    #[error("listing the tools of MCP server {server} failed: {source}")]
    ListTools {
        /// The server's label.
        server: String,
        /// The underlying error.
        #[source]
        source: ServiceError,
    },
    /// The server did not answer in time.
    #[error("MCP server {server} did not answer {stage} within {after:?}")]
    Timeout {
        /// The server's label.
        server: String,
        /// What was being waited for.
        stage: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// The session's background task failed while shutting down.
    #[error("shutting down MCP server {server} failed: {reason}")]
    Shutdown {
        /// The server's label.
        server: String,
        /// What went wrong.
        reason: String,
    },
}

fn seconds(field: &'static str, value: f64) -> Result<Duration, McpError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(McpError::InvalidTimeout { field, value })
}

type Session = RunningService<RoleClient, ClientConfig>;

/// A connected MCP server and the tools it offers.
///
/// Dropping it also ends the session (and kills a stdio child), but only [`McpServer::close`]
/// waits for that to finish.
pub struct McpServer {
    label: Arc<str>,
    session: Mutex<Option<Session>>,
    peer: Peer<RoleClient>,
    tools: Vec<Arc<dyn Tool>>,
    pid: Option<u32>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("label", &self.label)
            .field("tools", &self.tools.len())
            .field("pid", &self.pid)
            .finish()
    }
}

impl McpServer {
    /// Connects (spawning the child for stdio), does the MCP handshake and lists the tools.
    ///
    /// Fails rather than returning a server without tools, because a session must not start
    /// with an agent missing the tools its instructions mention (upstream fails session start
    /// too). On failure nothing is left running.
    pub async fn connect(config: &McpServerConfig) -> Result<McpServer, McpError> {
        let client_info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("hark", env!("CARGO_PKG_VERSION")),
        );
        let (label, session, pid, call_timeout) = match config {
            McpServerConfig::Http(c) => {
                let connect = seconds("connect_timeout_s", c.connect_timeout_s)?;
                let read = seconds("read_timeout_s", c.read_timeout_s)?;
                let call = seconds("session_timeout_s", c.session_timeout_s)?;
                let label = http_label(&c.url)?;
                let headers = header_map(&c.headers)?;
                let client = super::webhook::http_client_builder()
                    .connect_timeout(connect)
                    .read_timeout(read)
                    .build()
                    .map_err(|source| McpError::HttpClient {
                        server: label.clone(),
                        source,
                    })?;
                let transport = StreamableHttpClientTransport::with_client(
                    client,
                    StreamableHttpClientTransportConfig::with_uri(c.url.as_str())
                        .custom_headers(headers),
                );
                // Connecting and then answering are bounded separately upstream; one deadline
                // covering both keeps a dead host from stalling session start any longer.
                let session =
                    handshake(&label, client_info.serve(transport), connect + call).await?;
                (label, session, None, call)
            }
            McpServerConfig::Stdio(c) => {
                let call = seconds("session_timeout_s", c.session_timeout_s)?;
                let label = format!("{:?}", c.command);
                let mut cmd = tokio::process::Command::new(&c.command);
                cmd.args(&c.args).env_clear();
                for key in INHERITED_ENV {
                    if let Some(v) = std::env::var_os(key) {
                        cmd.env(key, v);
                    }
                }
                cmd.envs(&c.env);
                if let Some(cwd) = &c.cwd {
                    cmd.current_dir(cwd);
                }
                let child = TokioChildProcess::new(cmd).map_err(|source| McpError::Spawn {
                    command: c.command.clone(),
                    source,
                })?;
                let pid = child.id();
                let session = handshake(&label, client_info.serve(child), call).await?;
                (label, session, pid, call)
            }
        };
        let label: Arc<str> = label.into();
        let peer = session.peer().clone();
        let listed = match tokio::time::timeout(call_timeout, peer.list_all_tools()).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(source)) => {
                shut_down(session).await;
                return Err(McpError::ListTools {
                    server: label.to_string(),
                    source,
                });
            }
            Err(_) => {
                shut_down(session).await;
                return Err(McpError::Timeout {
                    server: label.to_string(),
                    stage: "tools/list",
                    after: call_timeout,
                });
            }
        };
        let tools = listed
            .into_iter()
            .map(|t| {
                Arc::new(McpTool {
                    spec: ToolSpec {
                        name: t.name.to_string(),
                        description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                        parameters: Value::Object(t.input_schema.as_ref().clone()),
                    },
                    server: label.clone(),
                    peer: peer.clone(),
                    timeout: call_timeout,
                }) as Arc<dyn Tool>
            })
            .collect::<Vec<_>>();
        tracing::info!(server = %label, tools = tools.len(), "MCP server connected");
        Ok(McpServer {
            label,
            session: Mutex::new(Some(session)),
            peer,
            tools,
            pid,
        })
    }

    /// The server's tools, as listed at connect time, ready to give to an agent.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools.clone()
    }

    /// A short name for logs: the command for stdio, the URL without query for HTTP.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The child's process id (stdio servers only), for supervision and diagnostics.
    pub fn process_id(&self) -> Option<u32> {
        self.pid
    }

    /// Whether the session is still up (false once the server exited, dropped the connection
    /// or was closed); upstream's `is_ready`.
    pub fn is_connected(&self) -> bool {
        !self.peer.is_transport_closed()
    }

    /// Ends the session and waits for it: a stdio child gets its stdin closed, then SIGTERM,
    /// then SIGKILL (a few seconds apart), and is reaped. Idempotent; tools called afterwards
    /// fail with [`ToolError::Failed`].
    pub async fn close(&self) -> Result<(), McpError> {
        let Some(mut session) = self.session.lock().await.take() else {
            return Ok(());
        };
        session
            .close()
            .await
            .map(|_| tracing::info!(server = %self.label, "MCP server closed"))
            .map_err(|e| McpError::Shutdown {
                server: self.label.to_string(),
                reason: e.to_string(),
            })
    }
}

/// Runs the `initialize` handshake under a deadline; on timeout the transport is dropped, which
/// kills a stdio child.
async fn handshake<F>(label: &str, serve: F, deadline: Duration) -> Result<Session, McpError>
where
    F: std::future::Future<Output = Result<Session, ClientInitializeError>>,
{
    match tokio::time::timeout(deadline, serve).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(McpError::Handshake {
            server: label.to_string(),
            reason: match &e {
                ClientInitializeError::TransportError { error, .. } => {
                    format!("could not reach it: {}", root_cause(error))
                }
                other => other.to_string(),
            },
        }),
        Err(_) => Err(McpError::Timeout {
            server: label.to_string(),
            stage: "the handshake",
            after: deadline,
        }),
    }
}

/// The innermost message of an error chain: rmcp's outer layers name Rust types, which mean
/// nothing to the LLM or an installer; the root ("Connection refused") does.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

async fn shut_down(mut session: Session) {
    if let Err(e) = session.close().await {
        tracing::warn!("MCP session task failed while closing: {e}");
    }
}

/// `scheme://host[:port]/path` of an http(s) URL: what logs may show (no user info, no query).
fn http_label(url: &str) -> Result<String, McpError> {
    let invalid = |reason: String| McpError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http(s)",
            parsed.scheme()
        )));
    }
    let last = parsed
        .path_segments()
        .and_then(|mut s| s.rfind(|seg| !seg.is_empty()))
        .unwrap_or("");
    if last.eq_ignore_ascii_case("sse") {
        return Err(McpError::LegacySse {
            url: url.to_string(),
        });
    }
    let host = parsed.host_str().unwrap_or_default();
    Ok(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}{}", parsed.scheme(), parsed.path()),
        None => format!("{}://{host}{}", parsed.scheme(), parsed.path()),
    })
}

/// Turns configured headers into sendable ones, each value marked sensitive so the HTTP stack
/// never prints it.
pub(crate) fn header_map(
    headers: &BTreeMap<String, String>,
) -> Result<HashMap<HeaderName, HeaderValue>, McpError> {
    headers
        .iter()
        .map(|(name, value)| {
            let invalid = || McpError::InvalidHeader { name: name.clone() };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let mut v = HeaderValue::from_str(value).map_err(|_| invalid())?;
            v.set_sensitive(true);
            Ok((n, v))
        })
        .collect()
}

/// One tool of an MCP server.
struct McpTool {
    spec: ToolSpec,
    server: Arc<str>,
    peer: Peer<RoleClient>,
    timeout: Duration,
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let name = &self.spec.name;
        let mut params = CallToolRequestParams::new(name.clone());
        match args {
            Value::Object(map) => params = params.with_arguments(map),
            Value::Null => {}
            other => {
                return Err(ToolError::InvalidArguments(format!(
                    "expected a JSON object, got {other}"
                )))
            }
        }
        // Dropping the request on timeout sends the server a cancellation.
        let response = tokio::time::timeout(self.timeout, self.peer.call_tool_once(params))
            .await
            .map_err(|_| ToolError::Timeout(self.timeout))?;
        match response {
            Ok(CallToolResponse::Complete(result)) => call_result(name, result),
            Ok(CallToolResponse::InputRequired(_)) => Err(ToolError::Failed(format!(
                "tool {name:?} asked for user input, which hark does not support"
            ))),
            // Tasks and later kinds of answer need client support hark does not have.
            Ok(_) => Err(ToolError::Failed(format!(
                "tool {name:?} answered with a kind of result hark does not support"
            ))),
            Err(e) => Err(self.service_error(e)),
        }
    }
}

impl McpTool {
    fn service_error(&self, e: ServiceError) -> ToolError {
        let (name, server) = (&self.spec.name, &self.server);
        match e {
            ServiceError::McpError(err) if err.code == ErrorCode::INVALID_PARAMS => {
                ToolError::InvalidArguments(err.message.into_owned())
            }
            ServiceError::McpError(err) => {
                ToolError::Failed(format!("tool {name:?} failed: {}", err.message))
            }
            ServiceError::Timeout { timeout } => ToolError::Timeout(timeout),
            ServiceError::TransportClosed => ToolError::Failed(format!(
                "cannot call tool {name:?}: MCP server {server} is not connected"
            )),
            ServiceError::TransportSend(e) => ToolError::Failed(format!(
                "cannot call tool {name:?}: MCP server {server} is unreachable ({})",
                root_cause(&e)
            )),
            other => ToolError::Failed(format!(
                "calling tool {name:?} on MCP server {server} failed: {other}"
            )),
        }
    }
}

/// Maps a `tools/call` result: an error result fails; structured content is JSON; otherwise
/// text blocks are joined by newlines, and any non-text block makes the whole content JSON.
fn call_result(name: &str, result: CallToolResult) -> Result<ToolOutput, ToolError> {
    let texts = || {
        result
            .content
            .iter()
            .map(|c| match c {
                ContentBlock::Text(t) => t.text.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            })
            .collect::<Vec<_>>()
    };
    if result.is_error == Some(true) {
        return Err(ToolError::Failed(format!(
            "tool {name:?} reported an error: {}",
            texts().join(" | ")
        )));
    }
    if let Some(structured) = result.structured_content {
        return Ok(ToolOutput::Json(structured));
    }
    if result
        .content
        .iter()
        .all(|c| matches!(c, ContentBlock::Text(_)))
    {
        return Ok(ToolOutput::Text(texts().join("\n")));
    }
    serde_json::to_value(&result.content)
        .map(ToolOutput::Json)
        .map_err(|e| ToolError::Failed(format!("tool {name:?} returned unreadable content: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Servers {
        mcp_servers: Vec<McpServerConfig>,
    }

    #[test]
    fn toml_shapes_and_defaults() {
        let s: Servers = toml::from_str(
            r#"
            [[mcp_servers]]
            kind = "mcp_http"
            url = "http://127.0.0.1:9/mcp"
            headers = { Authorization = "Bearer s3cret" }

            [[mcp_servers]]
            kind = "mcp_stdio"
            command = "srv"
            env = { KEY = "hidden-value" }
            "#,
        )
        .unwrap();
        let McpServerConfig::Http(h) = &s.mcp_servers[0] else {
            panic!("expected http")
        };
        assert_eq!(
            (h.connect_timeout_s, h.read_timeout_s, h.session_timeout_s),
            (10.0, 300.0, 5.0)
        );
        let McpServerConfig::Stdio(c) = &s.mcp_servers[1] else {
            panic!("expected stdio")
        };
        assert_eq!((c.session_timeout_s, c.args.len()), (5.0, 0));
        let debug = format!("{:?}", s.mcp_servers);
        assert!(debug.contains("Authorization") && debug.contains("KEY"));
        assert!(!debug.contains("s3cret") && !debug.contains("hidden-value"));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        for bad in [
            "[[mcp_servers]]\nkind = \"mcp_http\"\nurl = \"http://x/mcp\"\ntimeout = 3",
            "[[mcp_servers]]\nkind = \"mcp_stdio\"\ncommand = \"x\"\nurl = \"http://x/mcp\"",
            "[[mcp_servers]]\nkind = \"mcp_sse\"\nurl = \"http://x/sse\"",
        ] {
            assert!(toml::from_str::<Servers>(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn labels_hide_query_and_user_and_refuse_sse() {
        assert_eq!(
            http_label("https://u:p@h.example:8443/a/mcp?token=x").unwrap(),
            "https://h.example:8443/a/mcp"
        );
        assert!(matches!(
            http_label("http://h/sse/"),
            Err(McpError::LegacySse { .. })
        ));
        assert!(matches!(
            http_label("ftp://h/mcp"),
            Err(McpError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bad_header_errors_name_the_header_not_the_value() {
        let h = BTreeMap::from([("X-Key".to_string(), "line\nbreak-secret".to_string())]);
        let e = header_map(&h).unwrap_err().to_string();
        assert!(e.contains("X-Key") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn timeouts_must_be_positive() {
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(seconds("t", v).is_err(), "{v}");
        }
        assert_eq!(seconds("t", 0.25).unwrap(), Duration::from_millis(250));
    }
}
