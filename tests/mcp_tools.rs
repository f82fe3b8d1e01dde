//! MCP servers and webhooks as tools, against real servers: the rmcp-based
//! `examples/mcp_test_server.rs` run as a child process (stdio) and as an HTTP server, and a
//! small HTTP/1.1 server on a local socket for webhooks.
//!
//! The example is built by running cargo from the test (a no-op when `cargo test` already built
//! it), because `cargo test --test mcp_tools` alone does not build examples and a test must not
//! run a stale server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use hark::agent::mcp::{McpError, McpHttpConfig, McpServer, McpServerConfig, McpStdioConfig};
use hark::agent::webhook::{shared_http_client, WebhookConfig, WebhookMethod, WebhookTool};
use hark::agent::{Tool, ToolContext, ToolError, ToolOutput};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The test server binary, built once per test process.
fn server_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        // <target>/<profile>/deps/mcp_tools-<hash>
        let me = std::env::current_exe().expect("current_exe");
        let profile_dir = me.parent().and_then(|d| d.parent()).expect("target layout");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("unexpected target layout: {}", me.display()),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--example",
                "mcp_test_server",
                "--profile",
            ])
            .arg(&profile)
            .arg("--target-dir")
            .arg(target_dir)
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .status()
            .expect("running cargo to build the MCP test server");
        assert!(status.success(), "building examples/mcp_test_server failed");
        let exe = profile_dir.join("examples").join("mcp_test_server");
        assert!(exe.is_file(), "{} missing after build", exe.display());
        exe
    })
    .clone()
}

fn stdio_config(session_timeout_s: f64) -> McpServerConfig {
    McpServerConfig::Stdio(McpStdioConfig {
        command: server_exe().to_string_lossy().into_owned(),
        args: vec!["stdio".into()],
        env: BTreeMap::new(),
        cwd: None,
        session_timeout_s,
    })
}

/// Runs the test server in HTTP mode; returns the child and its endpoint URL.
async fn http_server() -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(server_exe())
        .arg("http")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the HTTP test server");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await.unwrap();
    assert!(line.starts_with("http://"), "unexpected banner {line:?}");
    (child, line.trim().to_string())
}

fn http_config(url: &str, headers: &[(&str, &str)], session_timeout_s: f64) -> McpServerConfig {
    McpServerConfig::Http(McpHttpConfig {
        url: url.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        connect_timeout_s: 10.0,
        read_timeout_s: 300.0,
        session_timeout_s,
    })
}

fn tool(server: &McpServer, name: &str) -> std::sync::Arc<dyn Tool> {
    server
        .tools()
        .into_iter()
        .find(|t| t.spec().name == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

async fn call(server: &McpServer, name: &str, args: Value) -> Result<ToolOutput, ToolError> {
    tool(server, name).call(args, &ToolContext::default()).await
}

fn text(out: Result<ToolOutput, ToolError>) -> String {
    match out {
        Ok(ToolOutput::Text(t)) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence; a reaped child gives ESRCH.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test]
async fn stdio_lists_tools_with_their_schemas() {
    let server = McpServer::connect(&stdio_config(5.0)).await.unwrap();
    let mut names: Vec<_> = server
        .tools()
        .iter()
        .map(|t| t.spec().name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["add", "fail", "headers", "pid", "slow"]);
    let add = tool(&server, "add");
    assert_eq!(add.spec().description, "Adds a and b.");
    assert_eq!(add.spec().parameters["required"], json!(["a", "b"]));
    assert_eq!(
        add.spec().parameters["properties"]["a"]["type"],
        json!("number")
    );
    server.close().await.unwrap();
}

#[tokio::test]
async fn stdio_calls_map_results_errors_and_timeouts() {
    let server = McpServer::connect(&stdio_config(0.5)).await.unwrap();
    assert_eq!(
        text(call(&server, "add", json!({"a": 2, "b": 3.5})).await),
        "5.5"
    );

    match call(&server, "fail", json!({})).await {
        Err(ToolError::Failed(m)) => {
            assert!(m.contains("flux capacitor is empty"), "{m}");
            assert!(m.contains("try again later"), "{m}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    // The server answers bad arguments with JSON-RPC invalid_params.
    assert!(matches!(
        call(&server, "add", json!({"a": 1})).await,
        Err(ToolError::InvalidArguments(m)) if m.contains("\"b\"")
    ));
    assert!(matches!(
        call(&server, "add", json!([1, 2])).await,
        Err(ToolError::InvalidArguments(_))
    ));

    assert_eq!(
        call(&server, "slow", json!({"ms": 30_000}))
            .await
            .unwrap_err(),
        ToolError::Timeout(Duration::from_millis(500))
    );
    // A timed-out call leaves the session usable.
    assert_eq!(
        text(call(&server, "add", json!({"a": 1, "b": 1})).await),
        "2"
    );
    assert_eq!(
        text(call(&server, "slow", json!({"ms": 10})).await),
        "slept 10 ms"
    );
    server.close().await.unwrap();
}

#[tokio::test]
async fn stdio_close_kills_the_child_and_later_calls_fail() {
    let server = McpServer::connect(&stdio_config(5.0)).await.unwrap();
    let pid = server.process_id().expect("stdio server has a pid");
    assert_eq!(text(call(&server, "pid", json!({})).await), pid.to_string());
    assert!(process_alive(pid) && server.is_connected());

    server.close().await.unwrap();
    assert!(!process_alive(pid), "child {pid} still running after close");
    assert!(!server.is_connected());
    server.close().await.unwrap(); // idempotent
    match call(&server, "add", json!({"a": 1, "b": 2})).await {
        Err(ToolError::Failed(m)) => assert!(m.contains("not connected"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn stdio_server_killed_mid_call_gives_a_clean_error() {
    // A long session timeout, so the error must come from the dead pipe, not the deadline.
    let server = McpServer::connect(&stdio_config(60.0)).await.unwrap();
    let pid = server.process_id().unwrap();
    let slow = tool(&server, "slow");
    let pending = tokio::spawn(async move {
        slow.call(json!({"ms": 60_000}), &ToolContext::default())
            .await
    });
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let started = std::time::Instant::now();
    match pending.await.expect("tool call must not panic") {
        Err(ToolError::Failed(m)) => {
            assert!(m.contains("not connected") || m.contains("slow"), "{m}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        call(&server, "add", json!({"a": 1, "b": 2})).await,
        Err(ToolError::Failed(_))
    ));
    assert!(!server.is_connected());
    server.close().await.unwrap();
}

#[tokio::test]
async fn stdio_connect_errors_are_typed() {
    let missing = McpServerConfig::Stdio(McpStdioConfig {
        command: "/nonexistent/mcp-server".into(),
        args: vec![],
        env: BTreeMap::from([("API_KEY".into(), "very-secret".into())]),
        cwd: None,
        session_timeout_s: 5.0,
    });
    let err = McpServer::connect(&missing).await.unwrap_err();
    assert!(matches!(err, McpError::Spawn { .. }), "{err}");
    assert!(!err.to_string().contains("very-secret"));

    // A process that is not an MCP server (exits at once) fails the handshake.
    let not_mcp = McpServerConfig::Stdio(McpStdioConfig {
        command: "true".into(),
        args: vec![],
        env: BTreeMap::new(),
        cwd: None,
        session_timeout_s: 5.0,
    });
    let err = McpServer::connect(&not_mcp).await.unwrap_err();
    assert!(matches!(err, McpError::Handshake { .. }), "{err}");
}

#[tokio::test]
async fn stdio_child_gets_configured_env_but_not_hark_secrets() {
    // `sh -c` stands in for a server: it prints its environment where the handshake expects
    // JSON, so the handshake fails, but first we read what it saw through a file.
    let dir = std::env::temp_dir().join(format!("hark-mcp-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = McpServerConfig::Stdio(McpStdioConfig {
        command: "sh".into(),
        args: vec!["-c".into(), "env > env.txt".into()],
        env: BTreeMap::from([("SERVER_KEY".into(), "for-the-server".into())]),
        cwd: Some(dir.clone()),
        session_timeout_s: 5.0,
    });
    assert!(McpServer::connect(&cfg).await.is_err());
    let seen = std::fs::read_to_string(dir.join("env.txt")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(seen.contains("SERVER_KEY=for-the-server"), "{seen}");
    assert!(seen.contains("PATH="), "{seen}");
    // Nothing else of ours (cargo sets plenty for tests) reaches it; sh adds its own few.
    let ours = [
        "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "PWD", "SHLVL", "_", "OLDPWD",
    ];
    for (key, _) in std::env::vars().filter(|(k, _)| !ours.contains(&k.as_str())) {
        assert!(
            !seen.lines().any(|l| l.starts_with(&format!("{key}="))),
            "{key} leaked to the child"
        );
    }
}

#[tokio::test]
async fn http_lists_calls_and_sends_custom_headers() {
    let (_child, url) = http_server().await;
    let cfg = http_config(
        &url,
        &[
            ("X-Api-Key", "key-123"),
            ("Authorization", "Bearer tok-456"),
        ],
        0.5,
    );
    let server = McpServer::connect(&cfg).await.unwrap();
    assert_eq!(server.tools().len(), 5);
    assert_eq!(server.process_id(), None);

    match call(&server, "headers", json!({})).await {
        Ok(ToolOutput::Json(h)) => {
            assert_eq!(h["x-api-key"], json!("key-123"), "{h}");
            assert_eq!(h["authorization"], json!("Bearer tok-456"), "{h}");
        }
        other => panic!("expected structured JSON, got {other:?}"),
    }
    assert_eq!(
        text(call(&server, "add", json!({"a": 40, "b": 2})).await),
        "42"
    );
    assert!(matches!(
        call(&server, "fail", json!({})).await,
        Err(ToolError::Failed(m)) if m.contains("flux capacitor")
    ));
    assert_eq!(
        call(&server, "slow", json!({"ms": 30_000}))
            .await
            .unwrap_err(),
        ToolError::Timeout(Duration::from_millis(500))
    );
    assert_eq!(
        text(call(&server, "add", json!({"a": 1, "b": 2})).await),
        "3"
    );
    server.close().await.unwrap();
}

#[tokio::test]
async fn http_server_killed_mid_session_gives_a_clean_error() {
    let (mut child, url) = http_server().await;
    let server = McpServer::connect(&http_config(&url, &[], 30.0))
        .await
        .unwrap();
    assert_eq!(
        text(call(&server, "add", json!({"a": 1, "b": 2})).await),
        "3"
    );
    child.kill().await.unwrap();
    let started = std::time::Instant::now();
    match call(&server, "add", json!({"a": 1, "b": 2})).await {
        Err(ToolError::Failed(m)) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    server.close().await.unwrap();
}

#[tokio::test]
async fn http_connect_errors_are_typed_and_hide_header_values() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let err = McpServer::connect(&http_config(&url, &[("Authorization", "Bearer hush")], 2.0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, McpError::Handshake { .. } | McpError::Timeout { .. }),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("hush"));

    let err = McpServer::connect(&http_config("http://127.0.0.1:1/sse", &[], 1.0))
        .await
        .unwrap_err();
    assert!(matches!(err, McpError::LegacySse { .. }), "{err}");
}

// ---- webhooks ----

/// One request as the webhook server saw it.
#[derive(Debug)]
struct Seen {
    request_line: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// What the webhook server answers; `None` never answers (holds the connection open).
type Reply = Option<(u16, &'static str, &'static str)>;

/// A one-request-per-connection HTTP/1.1 server; every request is reported on the channel.
async fn webhook_server(reply: Reply) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/SECRET-PATH?sig=SECRET",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).await.unwrap();
                let mut headers = BTreeMap::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap();
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
                let len = headers
                    .get("content-length")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).await.unwrap();
                let _ = tx.send(Seen {
                    request_line: request_line.trim_end().to_string(),
                    headers,
                    body,
                });
                let Some((status, content_type, body)) = reply else {
                    std::future::pending::<()>().await;
                    return;
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                reader
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .unwrap();
                reader.get_mut().shutdown().await.unwrap();
            });
        }
    });
    (url, rx)
}

fn webhook(url: &str, timeout_s: f64) -> WebhookTool {
    let config = WebhookConfig {
        name: "book_table".into(),
        description: "Books a table.".into(),
        url: url.to_string(),
        parameters: json!({"type": "object", "properties": {"people": {"type": "integer"}}}),
        headers: BTreeMap::from([("X-Token".into(), "tok-secret".into())]),
        timeout_s,
        method: WebhookMethod::Post,
    };
    WebhookTool::new(&config, shared_http_client().unwrap()).unwrap()
}

#[tokio::test]
async fn webhook_posts_arguments_as_json_and_returns_json() {
    let (url, mut seen) = webhook_server(Some((
        200,
        "application/json; charset=utf-8",
        r#"{"booked":true,"table":7}"#,
    )))
    .await;
    let out = webhook(&url, 5.0)
        .call(json!({"people": 4, "name": "Ada"}), &ToolContext::default())
        .await;
    assert!(
        matches!(out, Ok(ToolOutput::Json(ref v)) if *v == json!({"booked": true, "table": 7})),
        "{out:?}"
    );
    let req = seen.recv().await.unwrap();
    assert!(
        req.request_line
            .starts_with("POST /hooks/SECRET-PATH?sig=SECRET "),
        "{}",
        req.request_line
    );
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["x-token"], "tok-secret");
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body, json!({"people": 4, "name": "Ada"}));
}

#[tokio::test]
async fn webhook_text_reply_is_text() {
    let (url, _seen) = webhook_server(Some((201, "text/plain", "Booked for 4 at 8pm."))).await;
    let out = webhook(&url, 5.0)
        .call(json!({}), &ToolContext::default())
        .await;
    assert!(
        matches!(out, Ok(ToolOutput::Text(ref t)) if t == "Booked for 4 at 8pm."),
        "{out:?}"
    );
}

#[tokio::test]
async fn webhook_error_status_gives_status_and_body_excerpt() {
    const LONG: &str = "upstream exploded; xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxTAIL";
    let (url, _seen) = webhook_server(Some((500, "text/plain", LONG))).await;
    let err = webhook(&url, 5.0)
        .call(json!({}), &ToolContext::default())
        .await
        .unwrap_err();
    let expected: String = LONG.chars().take(200).collect();
    assert_eq!(err, ToolError::Failed(format!("HTTP 500: {expected}")));
}

#[tokio::test]
async fn webhook_timeout_and_connection_errors() {
    let (url, mut seen) = webhook_server(None).await;
    let tool = webhook(&url, 0.3);
    let err = tool
        .call(json!({}), &ToolContext::default())
        .await
        .unwrap_err();
    assert_eq!(err, ToolError::Timeout(Duration::from_millis(300)));
    assert!(
        seen.recv().await.is_some(),
        "the request reached the server"
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = webhook(&format!("http://127.0.0.1:{port}/h/SECRET"), 2.0)
        .call(json!({}), &ToolContext::default())
        .await
        .unwrap_err();
    match err {
        ToolError::Failed(m) => assert!(!m.contains("SECRET") && !m.contains("tok-secret"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}
