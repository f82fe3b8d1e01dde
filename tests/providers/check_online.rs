//! `hark check` lists every configured provider (primary and fallbacks, never a key) and, with
//! `--online`, pings each against its protocol test server, naming the ones that fail.

use crate::sse_server::{self, ScriptedHttpServer};
use crate::stt_support::WsTestServer;

const LLM_KEY: &str = "sk-check-0123456789";
const BACKUP_KEY: &str = "sk-backup-9876543210";
const DG_KEY: &str = "dg-check-0123456789";

fn models_listing() -> sse_server::Step {
    sse_server::Step::Reply {
        status: 200,
        headers: vec![],
        body: r#"{"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}"#.into(),
    }
}

async fn hark_check(config: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("hark-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{n}.toml"));
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .args(args)
        .env_remove("HARK_LOG")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn check_online_pings_each_provider_and_names_the_one_that_refused_its_key() {
    let deepgram = WsTestServer::start(vec![vec![]]).await;
    let llm = ScriptedHttpServer::start(vec![vec![models_listing()]]).await;
    let backup = ScriptedHttpServer::start(vec![vec![sse_server::Step::Reply {
        status: 401,
        headers: vec![],
        body: format!(
            r#"{{"error": {{"message": "Incorrect API key provided: {BACKUP_KEY}", "type": "invalid_request_error", "code": "invalid_api_key"}}}}"#
        ),
    }]])
    .await;
    let config = format!(
        r#"
[stt]
provider = "deepgram"
base_url = "{dg}"
api_key = "{DG_KEY}"

[llm]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{llm}/v1"
api_key = "{LLM_KEY}"

[[llm.fallback]]
provider = "openai"
model = "llama3.2"
base_url = "{backup}/v1"
api_key = "{BACKUP_KEY}"

[tts]
provider = "espeak"
"#,
        dg = deepgram.url("/v1/listen"),
        llm = llm.base_url,
        backup = backup.base_url,
    );

    // Offline: the list, nothing reached.
    let (code, stdout, stderr) = hark_check(&config, &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let llm_line = format!(
        "llm: openai, model gpt-4o-mini, at {}/v1, key set",
        llm.base_url
    );
    assert!(stdout.lines().any(|l| l == llm_line), "{stdout}");
    assert!(
        stdout.contains("llm.fallback[0]: openai, model llama3.2"),
        "{stdout}"
    );
    assert!(stdout.contains("stt: deepgram"), "{stdout}");
    assert!(stdout.contains("tts: espeak, no key"), "{stdout}");
    assert!(
        stdout.contains(
            "fallback: a failed provider is retried after 60 s, dropped after 3 failures"
        ),
        "{stdout}"
    );
    assert!(llm.received().is_empty() && deepgram.handshakes().is_empty());

    // Online: each pinged; the refused key fails the command, by name.
    let (code, stdout, stderr) = hark_check(&config, &["--online"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for ok in ["ping stt: ok", "ping llm: ok", "ping tts: ok"] {
        assert!(stdout.lines().any(|l| l.starts_with(ok)), "{ok}: {stdout}");
    }
    assert!(
        stdout.contains("ping llm.fallback[0]: failed: authentication failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("no answer from llm.fallback[0]"),
        "{stderr}"
    );

    let request = sse_server::only_request(&llm);
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {LLM_KEY}")
    );
    let handshake = &deepgram.handshakes()[0];
    assert_eq!(
        handshake.headers["authorization"],
        format!("Token {DG_KEY}")
    );
    assert!(
        handshake.uri.starts_with("/v1/listen?"),
        "{}",
        handshake.uri
    );
    // The stream was opened and closed unused: no audio.
    let conn = deepgram.conn(0).await;
    conn.wait_eof().await;
    assert!(conn.binaries().is_empty());

    for key in [LLM_KEY, BACKUP_KEY, DG_KEY] {
        assert!(
            !stdout.contains(key) && !stderr.contains(key),
            "{key} leaked"
        );
    }
}

#[tokio::test]
async fn http_providers_are_pinged_with_their_documented_listing_and_key_header() {
    let start = || ScriptedHttpServer::start(vec![vec![models_listing()]]);
    let (stt, anthropic, gemini, tts) =
        (start().await, start().await, start().await, start().await);
    let elevenlabs = start().await;
    let config = format!(
        r#"
[stt]
provider = "openai"
base_url = "{stt}/v1"
api_key = "{LLM_KEY}"

[llm]
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "{anthropic}"
api_key = "{LLM_KEY}"

[[llm.fallback]]
provider = "gemini"
model = "gemini-2.5-flash"
base_url = "{gemini}"
api_key = "{BACKUP_KEY}"

[tts]
provider = "openai"
base_url = "{tts}/v1"
api_key = "{LLM_KEY}"

[[tts.fallback]]
provider = "elevenlabs"
voice = "21m00Tcm4TlvDq8ikWAM"
base_url = "{elevenlabs}/v1"
api_key = "{BACKUP_KEY}"
"#,
        stt = stt.base_url,
        anthropic = anthropic.base_url,
        gemini = gemini.base_url,
        tts = tts.base_url,
        elevenlabs = elevenlabs.base_url.replace("http://", "ws://"),
    );
    let (code, stdout, stderr) = hark_check(&config, &["--online", "--quiet"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "", "--quiet prints nothing on success");

    let get = |server: &ScriptedHttpServer| {
        let r = sse_server::only_request(server);
        assert_eq!(r.method, "GET");
        r
    };
    let r = get(&stt);
    assert_eq!(r.path, "/v1/models");
    assert_eq!(r.headers["authorization"], format!("Bearer {LLM_KEY}"));
    let r = get(&tts);
    assert_eq!(r.path, "/v1/models");
    assert_eq!(r.headers["authorization"], format!("Bearer {LLM_KEY}"));
    let r = get(&anthropic);
    assert_eq!(r.path, "/v1/models");
    assert_eq!(r.headers["x-api-key"], LLM_KEY);
    assert!(
        r.headers.contains_key("anthropic-version"),
        "{:?}",
        r.headers
    );
    let r = get(&gemini);
    assert_eq!(r.path, "/v1beta/models");
    assert_eq!(r.headers["x-goog-api-key"], BACKUP_KEY);
    // ElevenLabs' socket takes any key until the first message; its REST API checks the key
    // and the voice, on the socket's host.
    let r = get(&elevenlabs);
    assert_eq!(r.path, "/v1/voices/21m00Tcm4TlvDq8ikWAM");
    assert_eq!(r.headers["xi-api-key"], BACKUP_KEY);
}
