//! What the SIP test files share: one log capture per test binary (to count lines and to
//! check that no password reaches the log), `[sip]` parsing, and blocking peer I/O.

use std::sync::{Arc, Mutex, OnceLock};

use hark::config::SipConfig;
use hark::transport::sip::{CallEvent, Endpoint, HangupReason, IncomingCall, RegistrationState};
use hark::transport::CallControl;

use super::sip_peers::{Baresip, Kamailio};

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Installs the binary's log capture at `level` (the first call decides) and returns it.
pub fn captured_logs_at(level: tracing::Level) -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

/// The capture at DEBUG, unless a test installed it at another level first.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    captured_logs_at(tracing::Level::DEBUG)
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line logged so far.
pub fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

/// A `[sip]` section's body, parsed and validated.
pub fn config(text: &str) -> SipConfig {
    let c: SipConfig = toml::from_str(text).unwrap();
    c.validate().unwrap();
    c
}

/// Runs blocking peer I/O without stalling the endpoint's tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The endpoint's first registration outcome (anything but `Off`), within 10 s.
pub async fn registered(ep: &Endpoint) -> RegistrationState {
    let mut rx = ep.registration();
    let state = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rx.wait_for(|s| !matches!(s, RegistrationState::Off)),
    )
    .await
    .expect("a registration outcome within 10 s")
    .unwrap()
    .clone();
    state
}

/// baresip `phone` dials `target` (hark directly, or through the proxy) and hark answers;
/// returns once both sides have the call up.
pub async fn answered_call(ep: &mut Endpoint, phone: &mut Baresip, target: &str) -> IncomingCall {
    let wait = std::time::Duration::from_secs(10);
    blocking(|| phone.command("dial", target));
    let call = tokio::time::timeout(wait, ep.accept())
        .await
        .expect("an INVITE within 10 s")
        .unwrap();
    call.answer().await.expect("ACK for our 200 OK");
    blocking(|| phone.wait_event(&["CALL_ESTABLISHED"], wait));
    call
}

/// Ends `call` from hark's side (BYE) or from the phone's, and checks that both sides saw it
/// end.
pub async fn hang_up(call: &mut IncomingCall, phone: &mut Baresip, by_hark: bool) {
    let wait = std::time::Duration::from_secs(10);
    if by_hark {
        call.control().hangup("done").await.unwrap();
    } else {
        blocking(|| phone.command("hangup", ""));
        assert_eq!(
            call.next_event_within(wait).await,
            Some(CallEvent::Hangup {
                reason: HangupReason::Remote
            })
        );
    }
    blocking(|| phone.wait_event(&["CALL_CLOSED"], wait));
}

/// Waits (10 s at most) for the first RTP packet at `call`'s socket and checks it is a 20 ms
/// G.711 packet from the address the phone's SDP named; returns its payload type.
pub async fn first_rtp(call: &IncomingCall) -> u8 {
    let mut pkt = [0u8; 1500];
    let wait = std::time::Duration::from_secs(10);
    let (n, from) = tokio::time::timeout(wait, call.rtp_socket.recv_from(&mut pkt))
        .await
        .expect("RTP from the phone within 10 s")
        .unwrap();
    assert!(n >= 12 + 160, "a 20 ms G.711 packet, got {n} bytes");
    assert_eq!(pkt[0] >> 6, 2, "RTP version 2");
    assert_eq!(from, call.media.remote);
    pkt[1] & 0x7f
}

/// Checks that kamailio got REGISTERs from `ep`, each over `proto` ("tcp", "tls") with
/// hark's Via and Contact for it (the log of `Kamailio::start_tcp`/`start_tls`).
pub fn registered_over(kam: &Kamailio, ep: &Endpoint, proto: &str) {
    let registers = kam.requests("REGISTER");
    assert!(!registers.is_empty(), "{}", kam.log());
    let via = format!("via=SIP/2.0/{} ", proto.to_ascii_uppercase());
    let contact = format!("contact=<sip:hark@{};transport={proto}>", ep.local_addr());
    for r in &registers {
        assert!(r.contains(&format!("proto={proto}")), "{r}");
        assert!(r.contains(&via), "{r}");
        assert!(r.contains(&contact), "{r}");
    }
}
