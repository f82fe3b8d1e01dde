//! A tiny MCP server for hark's tests (`tests/mcp_tools.rs`), built on rmcp's server side so the
//! client is checked against a real implementation of the protocol, not against itself.
//!
//! `mcp_test_server stdio` speaks MCP on stdin/stdout; `mcp_test_server http` serves streamable
//! HTTP on 127.0.0.1 at a free port and prints `http://127.0.0.1:PORT/mcp` as its first line.
//!
//! Tools: `add(a, b)` → text; `fail()` → an `isError` result; `slow(ms)` → sleeps, then text;
//! `headers()` → the HTTP request's headers as structured content; `pid()` → its process id.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

#[derive(Clone)]
struct TestTools;

fn schema(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("schemas are objects"),
    }
}

fn number(args: &Option<JsonObject>, key: &str) -> Result<f64, ErrorData> {
    args.as_ref()
        .and_then(|a| a.get(key))
        .and_then(Value::as_f64)
        .ok_or_else(|| ErrorData::invalid_params(format!("missing number {key:?}"), None))
}

impl ServerHandler for TestTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let two_numbers = json!({
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"]
        });
        let empty = json!({"type": "object", "properties": {}});
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("add", "Adds a and b.", schema(two_numbers)),
            Tool::new("fail", "Always reports an error.", schema(empty.clone())),
            Tool::new(
                "slow",
                "Sleeps for ms milliseconds.",
                schema(json!({"type": "object", "properties": {"ms": {"type": "integer"}}})),
            ),
            Tool::new(
                "headers",
                "The HTTP request headers.",
                schema(empty.clone()),
            ),
            Tool::new("pid", "The server's process id.", schema(empty)),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = &request.arguments;
        let result = match request.name.as_ref() {
            "add" => {
                let sum = number(args, "a")? + number(args, "b")?;
                CallToolResult::success(vec![ContentBlock::text(format!("{sum}"))])
            }
            "fail" => CallToolResult::error(vec![
                ContentBlock::text("the flux capacitor is empty"),
                ContentBlock::text("try again later"),
            ]),
            "slow" => {
                let ms = number(args, "ms")? as u64;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = context.ct.cancelled() => {}
                }
                CallToolResult::success(vec![ContentBlock::text(format!("slept {ms} ms"))])
            }
            "headers" => {
                let parts = context.extensions.get::<http::request::Parts>();
                let headers: serde_json::Map<String, Value> = parts
                    .map(|p| {
                        p.headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), Value::from(v.to_str().unwrap_or_default()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                CallToolResult::structured(Value::Object(headers))
            }
            "pid" => {
                CallToolResult::success(vec![ContentBlock::text(std::process::id().to_string())])
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool {other:?}"),
                    None,
                ))
            }
        };
        Ok(result.into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("stdio") => {
            let service = TestTools.serve(rmcp::transport::stdio()).await?;
            service.waiting().await?;
        }
        Some("http") => serve_http().await?,
        _ => return Err("usage: mcp_test_server stdio|http".into()),
    }
    Ok(())
}

async fn serve_http() -> Result<(), Box<dyn std::error::Error>> {
    let service = Arc::new(StreamableHttpService::new(
        || Ok(TestTools),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}/mcp", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.handle(req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, handler)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}
