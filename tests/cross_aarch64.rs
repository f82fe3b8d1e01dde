//! The release binary for aarch64 (Raspberry Pi 4/5), built here and run under qemu-user on
//! the same real speech, must produce the same timeline as the host build, on tract (the engine
//! every board has). onnxruntime's aarch64 library runs under Debian 13's qemu 10 but crashes
//! Debian 12's qemu 7.2 (an emulator fault, not hark's), so it is not part of this test.
//! qemu emulates a Cortex-A72, the Pi 4's core: its default "max" CPU offers SVE2, which tract
//! would pick and qemu runs about ten times slower than NEON.
//! scripts/test.sh installs the cross linker and qemu; where they are missing this test fails
//! and says so, rather than passing without having run.

mod common;

use std::path::Path;
use std::process::Command;

use common::root;

const TARGET: &str = "aarch64-unknown-linux-gnu";

fn tool(candidates: &[&str]) -> Option<String> {
    candidates.iter().find_map(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
}

fn timeline(runner: &[&str], exe: &Path, config: &Path, wav: &Path) -> serde_json::Value {
    let mut cmd = Command::new(runner.first().copied().unwrap_or(exe.to_str().unwrap()));
    if !runner.is_empty() {
        cmd.args(&runner[1..]).arg(exe);
    }
    let o = cmd
        .args([
            "--config",
            config.to_str().unwrap(),
            "listen",
            wav.to_str().unwrap(),
            "--json",
        ])
        .current_dir(root())
        .env_remove("HARK_MODELS")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn aarch64_release_build_gives_the_same_timeline_under_qemu() {
    let qemu = tool(&["qemu-aarch64-static", "qemu-aarch64"]).expect(
        "qemu-aarch64 not found: install Debian's qemu-user-static (scripts/setup.sh --test)",
    );
    tool(&["aarch64-linux-gnu-gcc"])
        .expect("aarch64-linux-gnu-gcc not found: install Debian's gcc-aarch64-linux-gnu (scripts/setup.sh --test)");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cross");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .current_dir(root())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cross build failed (is the {TARGET} target installed? `rustup target add {TARGET}`)"
    );
    let arm = target_dir.join(TARGET).join("release/hark");
    let elf = std::fs::read(&arm).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        183,
        "e_machine is not EM_AARCH64"
    );

    // The first 4 s of the demo speech: two phrases, two scored pauses.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut speech = common::speech("beckett.wav");
    speech.samples.truncate(4 * speech.rate as usize);
    let wav = tmp.join("cross-beckett-4s.wav");
    hark::audio::write_wav(&wav, &speech).unwrap();
    let qemu = [
        qemu.as_str(),
        "-cpu",
        "cortex-a72",
        "-L",
        "/usr/aarch64-linux-gnu",
        // libasound comes from Debian's multiarch package, outside the cross sysroot.
        "-E",
        "LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu",
    ];
    let config = tmp.join("cross-tract.toml");
    std::fs::write(
        &config,
        "[listen.vad]\nengine = \"tract\"\n[listen.turn]\nengine = \"tract\"\n",
    )
    .unwrap();
    let host = timeline(&[], Path::new(env!("CARGO_BIN_EXE_hark")), &config, &wav);
    let arm = timeline(&qemu, &arm, &config, &wav);
    same_timeline("tract", &arm, &host);
}

fn same_timeline(engine: &str, arm: &serde_json::Value, host: &serde_json::Value) {
    assert_eq!(arm["engines"], host["engines"], "{engine}");
    let (aseg, hseg) = (
        arm["segments"].as_array().unwrap(),
        host["segments"].as_array().unwrap(),
    );
    assert_eq!(
        aseg.len(),
        hseg.len(),
        "{engine}: aarch64 {aseg:?}, host {hseg:?}"
    );
    assert!(hseg.len() >= 2, "{engine}: {hseg:?}");
    for (a, h) in aseg.iter().zip(hseg) {
        for k in ["start", "end"] {
            let (a, h) = (a[k].as_f64().unwrap(), h[k].as_f64().unwrap());
            assert!(
                (a - h).abs() < 1e-9,
                "{engine}: segment {k}: aarch64 {a}, host {h}"
            );
        }
    }
    let (at, ht) = (
        arm["turns"].as_array().unwrap(),
        host["turns"].as_array().unwrap(),
    );
    assert_eq!(at.len(), ht.len(), "{engine}");
    assert!(!ht.is_empty(), "{engine}: no pause was scored");
    for (a, h) in at.iter().zip(ht) {
        assert_eq!(
            a["complete"], h["complete"],
            "{engine}: aarch64 {a}, host {h}"
        );
        let (pa, ph) = (
            a["probability"].as_f64().unwrap(),
            h["probability"].as_f64().unwrap(),
        );
        eprintln!(
            "{engine}: turn at {:.2} s: aarch64 p={pa:.4}, host p={ph:.4}",
            h["timestamp"].as_f64().unwrap()
        );
    }
}
