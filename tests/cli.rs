//! The `hark` command as a user meets it: outputs, exit statuses and error messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::root;

fn hark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(args)
        .current_dir(root())
        .env_remove("HARK_CONFIG")
        .env_remove("HARK_MODELS")
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn listen_without_a_file_runs_on_the_embedded_demo_speech() {
    let o = hark(&["listen"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.starts_with("demo speech (embedded): 9.96 s at 16000 Hz"),
        "{out}"
    );
    assert!(
        out.contains("  speech ") && out.contains("end of turn p="),
        "{out}"
    );
}

#[test]
fn listen_json_reports_segments_and_turns_for_a_48k_file() {
    let o = hark(&["listen", "models/speech/two_cities.wav", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sample_rate"], 48_000);
    let segments = v["segments"].as_array().unwrap();
    assert!(segments.len() >= 5, "{v}");
    for s in segments {
        assert!(s["end"].as_f64().unwrap() > s["start"].as_f64().unwrap());
    }
    let turns = v["turns"].as_array().unwrap();
    assert!(!turns.is_empty());
    assert!(turns
        .iter()
        .all(|t| (0.0..=1.0).contains(&t["probability"].as_f64().unwrap())));
}

#[test]
fn plot_writes_a_png() {
    let png = scratch("plot").join("beckett.png");
    let _ = std::fs::remove_file(&png);
    let o = hark(&[
        "listen",
        "models/speech/beckett.wav",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 20_000,
        "a plot with content, not an empty canvas"
    );
}

#[test]
fn a_bad_wav_is_a_clear_error_with_status_2() {
    let dir = scratch("badwav");
    let text = dir.join("notes.wav");
    std::fs::write(&text, "not audio").unwrap();
    let o = hark(&["listen", text.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("notes.wav: not a readable WAV file"),
        "{}",
        stderr(&o)
    );

    let hi = dir.join("96k.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 96_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&hi, spec).unwrap();
    for _ in 0..960 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let o = hark(&["listen", hi.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("sample rate 96000 Hz; expected 8000 to 48000 Hz"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_config_names_file_line_and_key() {
    let cfg = scratch("badcfg").join("hark.toml");
    std::fs::write(
        &cfg,
        "[listen.vad]\nmin_silence = 0.3\nthreshold = \"loud\"\n",
    )
    .unwrap();
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:3: listen.vad.threshold:", cfg.display())),
        "{err}"
    );
    assert!(err.contains("expected f32"), "{err}");
}

#[test]
fn hark_config_environment_variable_is_used_when_no_flag_is_given() {
    let cfg = scratch("envcfg").join("hark.toml");
    std::fs::write(&cfg, "[listen.turn]\nenabled = false\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("check")
        .current_dir(root())
        .env("HARK_CONFIG", &cfg)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains(&format!("config: {} (valid)", cfg.display())),
        "{out}"
    );
    assert!(
        out.contains("turn detection off") && !out.contains("model smart-turn"),
        "{out}"
    );
}

#[test]
fn check_prints_models_engines_and_what_would_run() {
    let o = hark(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("model silero-vad: models/silero_vad_op18_ifless.onnx on "),
        "{out}"
    );
    assert!(out.contains("model smart-turn: "), "{out}");
    assert!(out.contains("would run: the listening front end"), "{out}");
}

#[test]
fn a_corrupt_model_names_its_path_and_the_fetch_command() {
    let dir = scratch("corrupt");
    std::fs::write(dir.join("silero_vad_op18_ifless.onnx"), b"truncated").unwrap();
    let o = hark(&["--models-dir", dir.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            &dir.join("silero_vad_op18_ifless.onnx")
                .display()
                .to_string()
        ),
        "{err}"
    );
    assert!(err.contains("python3 models/fetch.py"), "{err}");
}

#[test]
fn forcing_tract_in_config_runs_both_models_on_tract() {
    let cfg = scratch("tract").join("hark.toml");
    std::fs::write(
        &cfg,
        "[listen.vad]\nengine = \"tract\"\n[listen.turn]\nengine = \"tract\"\n",
    )
    .unwrap();
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("silero_vad_op18_ifless.onnx on tract"),
        "{out}"
    );
    assert!(out.contains("smart-turn-v3.2-cpu.onnx on tract"), "{out}");
}

#[test]
fn check_prints_a_configured_agent() {
    let cfg = scratch("agent").join("hark.toml");
    std::fs::write(
        &cfg,
        r#"[agent]
instructions = """
You are the front desk of the Grand Hotel.
Be brief."""
greeting = "Grand Hotel, how can I help?"
builtin_tools = ["end_call", "send_dtmf"]

[agent.wake_up]
after = 20
prompt = "Are you still there?"
goodbye = "Goodbye."

[[agent.webhooks]]
name = "book_room"
url = "https://example.com/hook"
parameters = { type = "object" }

[[agent.mcp_servers]]
kind = "mcp_http"
url = "https://user:pw@tools.example.com/mcp?token=SECRET"
"#,
    )
    .unwrap();
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for want in [
        "agent: instructions (52 chars, 2 lines): \"You are the front desk of the Grand Hotel.…\"",
        "agent: greeting: \"Grand Hotel, how can I help?\"",
        "agent: tools: end_call, send_dtmf, book_room (webhook)",
        "agent: tools of MCP server https://tools.example.com/mcp (listed when a session starts)",
        "agent: end of utterance default 0.5–0.8 s; interruptions hybrid",
        "agent: wake-up after 20 s of silence: says \"Are you still there?\" up to 1 time, \
         then says \"Goodbye.\" and ends the session",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("SECRET") && !out.contains("pw@"), "{out}");
}

#[test]
fn a_bad_agent_config_names_file_line_and_key() {
    let cfg = scratch("badagent").join("hark.toml");
    std::fs::write(
        &cfg,
        "[agent]\ninstructions = \"x\"\nbuiltin_tools = [\"hang_up\"]\n",
    )
    .unwrap();
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}:3: agent.builtin_tools[0]: unknown built-in tool \"hang_up\"",
            cfg.display()
        )),
        "{err}"
    );
}

#[test]
fn call_without_a_sip_section_is_a_clear_error() {
    let cfg = scratch("callnosip").join("hark.toml");
    std::fs::write(&cfg, "[agent]\ninstructions = \"Be brief.\"\n").unwrap();
    let o = hark(&[
        "--config",
        cfg.to_str().unwrap(),
        "call",
        "sip:alice@127.0.0.1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("needs a [sip] section"), "{err}");
}

#[test]
fn a_warm_transfer_tool_without_a_supervisor_names_the_missing_section() {
    let cfg = scratch("warmnodest").join("hark.toml");
    std::fs::write(
        &cfg,
        "[agent]\ninstructions = \"Be brief.\"\nbuiltin_tools = [\"warm_transfer\"]\n",
    )
    .unwrap();
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("agent.builtin_tools") && err.contains("[agent.warm_transfer]"),
        "{err}"
    );
}

#[test]
fn check_loads_the_agents_sounds_and_a_missing_one_fails_naming_its_key_and_file() {
    let speech = concat!(env!("CARGO_MANIFEST_DIR"), "/models/speech/clone-test.wav");
    let cfg = scratch("sounds").join("hark.toml");
    let write = |music: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[agent]\ninstructions = \"Be brief.\"\n[agent.thinking_audio]\nfile = \"{speech}\"\n\
                 [agent.warm_transfer]\ndestination = \"sip:s@pbx.test\"\nhold_music = \"{music}\"\n"
            ),
        )
        .unwrap()
    };
    write(speech);
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for want in [
        format!("agent: thinking sound {speech} (4.1 s, volume 0.3)"),
        format!("agent: hold music {speech} (4.1 s), looped while a caller is on hold"),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    write("/nonexistent/hold.wav");
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("agent.warm_transfer.hold_music: ") && err.contains("/nonexistent/hold.wav"),
        "{err}"
    );
}

#[test]
fn check_prints_the_phone_line_without_its_passwords() {
    let cfg = scratch("sipcheck").join("hark.toml");
    std::fs::write(
        &cfg,
        "[sip]\nregistrar = \"pbx.example.com:5080\"\nuser = \"frontdesk\"\n\
         password = \"pw-4f9c2e\"\nallow = [\"192.0.2.0/24\"]\nmax_sessions = 4\n\
         inbound_auth = true\ninbound_password = \"in-77ab10\"\nsession_expires = 600\n",
    )
    .unwrap();
    let o = hark(&["--config", cfg.to_str().unwrap(), "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for want in [
        "sip: udp on 0.0.0.0:5060 (its address for peers found from the route to the registrar)",
        "sip: registers sip:frontdesk@pbx.example.com with pbx.example.com:5080 for 300 s \
         (digest user frontdesk, password set)",
        "sip: calls accepted from the registrar and 192.0.2.0/24, digest-challenged (user frontdesk, MD5)",
        "sip: up to 4 calls at once (one more is answered 486); codecs PCMU, PCMA; RTP ports 10000-20000",
        "sip: session timer of 600 s asked for on calls hark places",
        "sip: a keep-alive to the registrar every 25 s; behind a NAT, registers the address the registrar sees",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let all = format!("{out}{}", stderr(&o));
    assert!(
        !all.contains("pw-4f9c2e") && !all.contains("in-77ab10"),
        "{all}"
    );
}

#[test]
fn check_loads_the_tls_files_and_an_unusable_one_fails_naming_it() {
    let dir = scratch("sipcheck-tls");
    let pki = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
    let cfg = dir.join("hark.toml");
    let write = |key: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[sip]\ntransport = \"tls\"\ntls_ca = \"{pki}/ca.pem\"\n\
                 tls_certificate = \"{pki}/peer.pem\"\ntls_key = \"{pki}/{key}\"\n"
            ),
        )
        .unwrap();
        hark(&["--config", cfg.to_str().unwrap(), "check"])
    };
    let o = write("peer.key");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "sip: tls on 0.0.0.0:5061",
        &format!("sip: TLS checks peers against the CAs in {pki}/ca.pem; presents {pki}/peer.pem"),
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // A certificate where the key should be: named, with what was expected.
    let o = write("peer.pem");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{pki}/peer.pem: expected a PEM private key")),
        "{err}"
    );
}
