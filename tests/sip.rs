//! The SIP endpoint against real peers: kamailio as registrar and proxy, baresip as the phone
//! that calls hark. Everything runs on loopback, on ports picked per test.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hark::config::SipConfig;
use hark::transport::sip::media::g711::G711;
use hark::transport::sip::media::session::{MediaConfig, RtpSession};
use hark::transport::sip::message::Message;
use hark::transport::sip::{
    CallEvent, DialError, Direction, Endpoint, HangupReason, RegisterError, RegistrationState,
};
use hark::transport::CallControl;
use support::sip_peers::{require_peers, Baresip, Kamailio, DOMAIN};
use support::sip_setup::{
    answered_call, blocking, captured_logs, config, first_rtp, hang_up, logs_text, registered,
};

const WAIT: Duration = Duration::from_secs(10);

/// A direct-call endpoint on loopback that lets loopback peers call.
fn direct_config(extra: &str) -> SipConfig {
    config(&format!(
        "bind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\nrtp_ports = [{0}, {1}]\n{extra}",
        20000 + (std::process::id() % 200) * 40,
        20000 + (std::process::id() % 200) * 40 + 39
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_md5_digest_and_unregisters_on_shutdown() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start(&[("hark", "md5-pass-31337")], "MD5");
    let ep = Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\nregistrar = \"{}\"\nuser = \"hark\"\npassword = \"md5-pass-31337\"\ndomain = \"{DOMAIN}\"\nexpires = 120",
        kam.addr
    )))
    .await
    .unwrap();
    let mut rx = ep.registration();
    assert_eq!(
        registered(&ep).await,
        RegistrationState::Registered { expires: 120 },
        "{}",
        kam.log()
    );
    ep.shutdown().await;
    assert_eq!(*rx.borrow_and_update(), RegistrationState::Unregistered);
    assert!(
        !logs_text().contains("md5-pass-31337"),
        "the password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_is_refreshed_before_the_granted_lifetime_runs_out() {
    require_peers();
    captured_logs();
    // kamailio grants at most 5 s, whatever hark asks for: hark must refresh at 80 % (4 s).
    let kam = Kamailio::start_with(&[("hark", "refresh-pass")], "MD5", Some(5));
    let ep = Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\nregistrar = \"{}\"\nuser = \"hark\"\npassword = \"refresh-pass\"\ndomain = \"{DOMAIN}\"",
        kam.addr
    )))
    .await
    .unwrap();
    let mut rx = ep.registration();
    assert_eq!(
        registered(&ep).await,
        RegistrationState::Registered { expires: 5 },
        "{}",
        kam.log()
    );
    rx.borrow_and_update();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(6), rx.changed())
        .await
        .expect("a refresh before the 5 s binding lapsed")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(*rx.borrow(), RegistrationState::Registered { expires: 5 });
    assert!(
        took > Duration::from_secs(3) && took < Duration::from_secs(5),
        "refreshed after {took:?}, expected about 4 s"
    );
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_sha256_digest_when_the_registrar_asks_for_it() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start(&[("hark", "sha-pass-4242")], "SHA-256");
    let ep = Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\nregistrar = \"{}\"\nuser = \"hark\"\npassword = \"sha-pass-4242\"\ndomain = \"{DOMAIN}\"",
        kam.addr
    )))
    .await
    .unwrap();
    assert_eq!(
        registered(&ep).await,
        RegistrationState::Registered { expires: 300 },
        "{}",
        kam.log()
    );
    // kamailio logs each REGISTER's Authorization header: ours named SHA-256.
    assert!(
        kam.log().contains("algorithm=SHA-256"),
        "kamailio did not see a SHA-256 answer:\n{}",
        kam.log()
    );
    ep.shutdown().await;
    assert!(!logs_text().contains("sha-pass-4242"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_that_does_not_show_it() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start(&[("hark", "right-pass")], "MD5");
    let ep = Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\nregistrar = \"{}\"\nuser = \"hark\"\npassword = \"wrong-pass-777\"\ndomain = \"{DOMAIN}\"",
        kam.addr
    )))
    .await
    .unwrap();
    let state = registered(&ep).await;
    let RegistrationState::Failed(err) = &state else {
        panic!("expected a failure, got {state:?}");
    };
    assert!(
        matches!(err, RegisterError::AuthRejected { code: 401, .. }),
        "{err:?}"
    );
    let shown = format!("{err} / {err:?}");
    assert!(shown.contains("sip.password"), "{shown}");
    assert!(!shown.contains("wrong-pass-777"), "{shown}");
    drop(ep);
    assert!(
        !logs_text().contains("wrong-pass-777"),
        "the password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_hark_directly_gets_the_expected_answer_and_hangs_up() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    blocking(|| phone.command("dial", &target));
    let mut call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .expect("an INVITE within 10 s")
        .unwrap();
    assert!(call.from.contains("sip:caller@"), "{}", call.from);
    assert_eq!(call.media.codec, "PCMU");
    assert_eq!(call.media.payload_type, 0);
    assert_eq!(call.media.clock_rate, 8000);
    assert_eq!(call.media.direction, Direction::SendRecv);
    assert_eq!(call.media.remote.ip(), phone.sip_addr.ip());
    assert!(
        (30000..31000).contains(&call.media.remote.port()),
        "{:?}",
        call.media
    );
    call.answer().await.expect("ACK for our 200 OK");
    blocking(|| phone.wait_event(&["CALL_ESTABLISHED"], WAIT));
    // The SDP answer pointed baresip at our RTP socket: its tone arrives there as PCMU.
    assert_eq!(first_rtp(&call).await, 0, "payload type PCMU");
    blocking(|| phone.command("hangup", ""));
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::Remote
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_hangs_up_and_baresip_sees_the_bye() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    let mut call = answered_call(&mut ep, &mut phone, &target).await;
    call.control()
        .hangup("goodbye")
        .await
        .expect("BYE answered");
    blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::Local
        })
    );
    // The call is gone: hanging up again says so.
    assert!(call.control().hangup("again").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_crosses_with_baresip_and_its_reports_on_our_stream_give_loss_and_round_trip() {
    use std::sync::atomic::Ordering::Relaxed;
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    // baresip stops its stream's RTCP when its microphone file ends: 30 s of tone.
    let tone = hark::audio::Audio {
        rate: 8000,
        samples: (0..8000 * 30)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin())
            .collect(),
    };
    let mut phone = Baresip::start_with("caller", None, false, Some(&tone));
    let target = format!("sip:hark@{}", ep.local_addr());
    let call = answered_call(&mut ep, &mut phone, &target).await;
    let media = call.media.clone();
    let (socket, rtcp, _events) = call.into_parts();
    let rtp_port = socket.local_addr().unwrap().port();
    assert_eq!(rtcp.local_addr().unwrap().port(), rtp_port + 1);
    let codec = G711::from_payload_type(media.payload_type).unwrap();
    let (rtp, mut streams) =
        RtpSession::start_with_rtcp(socket, Some(rtcp), MediaConfig::new(media.remote, codec))
            .unwrap();
    // hark talks, so its reports are sender reports baresip can echo; baresip's reports on
    // hark's stream then say what it lost and, with the echo, give the round trip.
    let silence = [0.0f32; 320];
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while rtp.stats().round_trip().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no round trip from baresip's RTCP within 25 s: {:?}\n{}",
            rtp.stats(),
            logs_text()
                .lines()
                .filter(|l| l.contains("RTCP"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        clock.tick().await;
        streams.outbound.push(&silence);
    }
    let stats = rtp.stats();
    let round_trip = stats.round_trip().unwrap();
    assert!(
        round_trip < Duration::from_millis(50),
        "loopback: {round_trip:?}"
    );
    assert!(
        stats.rtcp_sent.load(Relaxed) >= 2,
        "an RR, then SRs: {stats:?}"
    );
    assert_eq!(stats.rtcp_malformed.load(Relaxed), 0);
    assert_eq!(stats.peer_lost.load(Relaxed), 0, "nothing lost on loopback");
    eprintln!(
        "baresip's reports: round trip {round_trip:?}, jitter of ours {} us",
        stats.peer_jitter_us.load(Relaxed)
    );
    blocking(|| phone.command("hangup", ""));
    blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_at_max_sessions_gets_486_busy_here() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("max_sessions = 1"))
        .await
        .unwrap();
    let mut first = Baresip::start("first", None);
    let mut second = Baresip::start("second", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    let call = answered_call(&mut ep, &mut first, &target).await;
    blocking(|| second.command("dial", &target));
    let closed = blocking(|| second.wait_event(&["CALL_CLOSED"], WAIT));
    assert!(closed.contains("486"), "{closed}");
    assert_eq!(
        ep.stats().busy.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The first call is untouched.
    call.control().hangup("done").await.unwrap();
    blocking(|| first.wait_event(&["CALL_CLOSED"], WAIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_gives_up_before_the_answer_cancels_the_call() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    blocking(|| phone.command("dial", &target));
    let mut call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .unwrap()
        .unwrap();
    blocking(|| phone.wait_event(&["CALL_RINGING"], WAIT));
    blocking(|| phone.command("hangup", ""));
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::Cancelled
        })
    );
    assert!(
        call.answer().await.is_err(),
        "a cancelled call cannot be answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume_from_baresip_are_events_with_the_mirrored_direction() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    let mut call = answered_call(&mut ep, &mut phone, &target).await;
    blocking(|| phone.command("hold", ""));
    assert_eq!(call.next_event_within(WAIT).await, Some(CallEvent::Hold));
    match call.next_event_within(WAIT).await {
        Some(CallEvent::MediaChanged(m)) => assert_eq!(m.direction, Direction::RecvOnly),
        other => panic!("expected MediaChanged, got {other:?}"),
    }
    blocking(|| phone.command("resume", ""));
    assert_eq!(call.next_event_within(WAIT).await, Some(CallEvent::Resume));
    match call.next_event_within(WAIT).await {
        Some(CallEvent::MediaChanged(m)) => assert_eq!(m.direction, Direction::SendRecv),
        other => panic!("expected MediaChanged, got {other:?}"),
    }
    call.control().hangup("done").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_allow_list_gets_403() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&config("bind = \"127.0.0.1:0\"\nallow = [\"192.0.2.1\"]"))
        .await
        .unwrap();
    let mut phone = Baresip::start("stranger", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    blocking(|| phone.command("dial", &target));
    let closed = blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
    assert!(closed.contains("403"), "{closed}");
    assert_eq!(
        ep.stats()
            .forbidden
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ep.accept())
            .await
            .is_err(),
        "no call was offered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_kamailio_reaches_the_registered_endpoint_both_ways_of_hanging_up() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start(
        &[("hark", "hark-pass-9"), ("caller", "caller-pass-9")],
        "MD5",
    );
    // No allow list: only the registrar may send INVITEs.
    let mut ep = Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\nregistrar = \"{}\"\nuser = \"hark\"\npassword = \"hark-pass-9\"\ndomain = \"{DOMAIN}\"",
        kam.addr
    )))
    .await
    .unwrap();
    assert!(matches!(
        registered(&ep).await,
        RegistrationState::Registered { .. }
    ));
    let mut phone = Baresip::start("caller", Some((kam.addr, "caller-pass-9")));
    blocking(|| phone.wait_log("200 OK (kamailio", WAIT));
    for hark_hangs_up in [false, true] {
        let target = format!("sip:hark@{DOMAIN}");
        let mut call = answered_call(&mut ep, &mut phone, &target).await;
        assert!(call.to.contains(&format!("hark@{DOMAIN}")), "{}", call.to);
        // hark's BYE goes through kamailio (it record-routed the INVITE).
        hang_up(&mut call, &mut phone, hark_hangs_up).await;
    }
    ep.shutdown().await;
}

/// The registrar restarts and forgets every binding: hark's next refresh (at 80 % of the 5 s
/// grant) registers it with the new instance, and a call through it reaches hark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_restart_is_survived_and_calls_reach_hark_after_the_next_refresh() {
    require_peers();
    captured_logs();
    let mut kam = Kamailio::start_with(
        &[("hark", "restart-pass-5"), ("caller", "caller-pass-5")],
        "MD5",
        Some(5),
    );
    let mut ep = Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\nregistrar = \"{}\"\nuser = \"hark\"\npassword = \"restart-pass-5\"\ndomain = \"{DOMAIN}\"",
        kam.addr
    )))
    .await
    .unwrap();
    assert!(matches!(
        registered(&ep).await,
        RegistrationState::Registered { .. }
    ));
    let mut rx = ep.registration();
    rx.borrow_and_update();
    blocking(|| kam.restart());
    let restarted = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a registration with the restarted registrar within 10 s")
        .unwrap();
    assert!(
        matches!(*rx.borrow(), RegistrationState::Registered { .. }),
        "{:?}\n{}",
        *rx.borrow(),
        kam.log()
    );
    eprintln!(
        "registered again {:?} after the restart",
        restarted.elapsed()
    );

    let mut phone = Baresip::start("caller", Some((kam.addr, "caller-pass-5")));
    blocking(|| phone.wait_log("200 OK (kamailio", WAIT));
    let mut call = answered_call(&mut ep, &mut phone, &format!("sip:hark@{DOMAIN}")).await;
    hang_up(&mut call, &mut phone, true).await;
    ep.shutdown().await;
}

/// Sends a datagram and returns the first response line (or `None` after 1 s).
async fn exchange(sock: &tokio::net::UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<String> {
    sock.send_to(msg, to).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(text)
}

fn request(method: &str, n: u32, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} sip:hark@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKc{n}\r\n\
         From: <sip:fuzz@127.0.0.1>;tag=f{n}\r\nTo: <sip:hark@127.0.0.1>\r\nCall-ID: corpus{n}\r\n\
         {headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_refused_or_dropped_and_calls_still_work() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let to = ep.local_addr();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bad_sdp = "v=0\r\nc=IN IP4 banana\r\nm=audio 4000 RTP/AVP 0\r\n";
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        // Headers that never end.
        (b"INVITE sip:hark@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4".to_vec(), None),
        // Binary noise.
        ((0..200u8).map(|b| b.wrapping_mul(37)).collect(), None),
        // Content-Length far beyond the datagram.
        (
            String::from_utf8(request("OPTIONS", 1, "CSeq: 1 OPTIONS\r\n", ""))
                .unwrap()
                .replace("Content-Length: 0", "Content-Length: 99999999")
                .into_bytes(),
            Some("SIP/2.0 400"),
        ),
        // CSeq method not the request's.
        (request("OPTIONS", 2, "CSeq: 1 INVITE\r\n", ""), Some("SIP/2.0 400")),
        // CSeq not a number.
        (request("OPTIONS", 3, "CSeq: one OPTIONS\r\n", ""), Some("SIP/2.0 400")),
        // An INVITE whose SDP is nonsense.
        (
            request(
                "INVITE",
                4,
                "CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContact: <sip:fuzz@127.0.0.1:9>\r\n",
                bad_sdp,
            ),
            Some("SIP/2.0 400"),
        ),
    ];
    for (i, (data, expected)) in cases.iter().enumerate() {
        let got = exchange(&sock, to, data).await;
        match expected {
            Some(prefix) => {
                // An INVITE gets 100 Trying first; the final answer follows.
                let mut got = got;
                if got.as_deref().is_some_and(|g| g.starts_with("SIP/2.0 100")) {
                    let mut buf = vec![0u8; 65536];
                    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                    got = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                let got = got.unwrap_or_else(|| panic!("case {i}: no response"));
                assert!(got.starts_with(prefix), "case {i}: {got}");
            }
            None => assert_eq!(got, None, "case {i}: expected silence"),
        }
    }
    let malformed = ep
        .stats()
        .malformed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(malformed, 5, "the five unparseable datagrams were counted");
    assert_eq!(
        ep.stats()
            .bad_offer
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // OPTIONS still answered, with what we allow and accept.
    let ok = exchange(&sock, to, &request("OPTIONS", 9, "CSeq: 9 OPTIONS\r\n", ""))
        .await
        .unwrap();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        ok.contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"),
        "{ok}"
    );
    assert!(ok.contains("Accept: application/sdp"), "{ok}");
    // And a real call still works.
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{to}");
    let call = answered_call(&mut ep, &mut phone, &target).await;
    call.control().hangup("done").await.unwrap();
}

/// Reads datagrams until a response whose status line starts with `status` (5 s limit).
async fn expect_response(sock: &tokio::net::UdpSocket, status: &str) -> Message {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {status} within 5 s"))
            .unwrap();
        if buf[..n].starts_with(format!("SIP/2.0 {status}").as_bytes()) {
            return Message::parse(&buf[..n]).unwrap();
        }
    }
}

/// A hand-written caller: exact control of every request, for what baresip cannot be made
/// to send (a retransmitted INVITE, INFO, requests with a wrong tag).
struct ScriptedCaller {
    sock: tokio::net::UdpSocket,
    hark: SocketAddr,
    to_tag: String,
}

impl ScriptedCaller {
    fn request(&self, method: &str, cseq: u32, branch: &str, extra: &str, body: &str) -> Vec<u8> {
        let me = self.sock.local_addr().unwrap();
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        format!(
            "{method} sip:hark@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:script@{me}>;tag=scripted\r\nTo: <sip:hark@{0}>{to_tag}\r\n\
             Call-ID: scripted-call\r\nCSeq: {cseq} {method}\r\nContact: <sip:script@{me}>\r\n\
             {extra}Content-Length: {1}\r\n\r\n{body}",
            self.hark,
            body.len()
        )
        .into_bytes()
    }

    async fn send(&self, data: &[u8]) {
        self.sock.send_to(data, self.hark).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_call_covers_retransmission_info_and_dialog_matching() {
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut caller = ScriptedCaller {
        sock: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        hark: ep.local_addr(),
        to_tag: String::new(),
    };
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
                 a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
    let invite = caller.request(
        "INVITE",
        1,
        "inv1",
        "Content-Type: application/sdp\r\n",
        offer,
    );
    caller.send(&invite).await;
    expect_response(&caller.sock, "100").await;
    expect_response(&caller.sock, "180").await;
    // A retransmitted INVITE gets the last response again, not a second call.
    caller.send(&invite).await;
    expect_response(&caller.sock, "180").await;
    let call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ep.accept())
            .await
            .is_err(),
        "one INVITE, one call"
    );
    assert_eq!((call.media.codec, call.media.payload_type), ("PCMA", 8));
    assert_eq!(call.media.telephone_event, Some(101));
    assert_eq!(call.media.remote, "127.0.0.1:4000".parse().unwrap());
    let rtp_port = call.rtp_socket.local_addr().unwrap().port();
    let control = call.control();
    let answering = tokio::spawn(async move {
        let r = call.answer().await;
        (call, r)
    });
    let ok = expect_response(&caller.sock, "200").await;
    let sdp = String::from_utf8(ok.body.clone()).unwrap();
    assert!(
        sdp.contains(&format!("m=audio {rtp_port} RTP/AVP 8 101\r\n")),
        "{sdp}"
    );
    assert!(sdp.contains("a=sendrecv"), "{sdp}");
    caller.to_tag = ok.to_tag().expect("200 OK has hark's tag");
    caller.send(&caller.request("ACK", 1, "ack1", "", "")).await;
    let (mut call, answered) = answering.await.unwrap();
    answered.expect("the ACK completes the answer");

    // INFO with a tag that is not hark's belongs to no dialog.
    let right_tag = std::mem::replace(&mut caller.to_tag, "not-hark".into());
    let body = "Signal=5\r\nDuration=160\r\n";
    let ct = "Content-Type: application/dtmf-relay\r\n";
    caller
        .send(&caller.request("INFO", 2, "info1", ct, body))
        .await;
    expect_response(&caller.sock, "481").await;
    caller.to_tag = right_tag;
    caller
        .send(&caller.request("INFO", 3, "info2", ct, body))
        .await;
    expect_response(&caller.sock, "200").await;
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Info {
            content_type: "application/dtmf-relay".into(),
            body: body.as_bytes().to_vec()
        })
    );
    caller.send(&caller.request("BYE", 4, "bye1", "", "")).await;
    expect_response(&caller.sock, "200").await;
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::Remote
        })
    );
    assert!(control.hangup("late").await.is_err(), "the call is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_calls_baresip_and_either_side_hangs_up() {
    require_peers();
    captured_logs();
    let ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start_with("callee", None, true, None);
    let target = format!("sip:callee@{}", phone.sip_addr);
    for hark_hangs_up in [true, false] {
        let mut call = ep.call(&target, WAIT).await.expect("baresip answers");
        assert_eq!((call.media.codec, call.media.payload_type), ("PCMU", 0));
        assert_eq!(call.media.remote.ip(), phone.sip_addr.ip());
        blocking(|| phone.wait_event(&["CALL_ESTABLISHED"], WAIT));
        // Our offer named our RTP socket: baresip's tone arrives there.
        assert_eq!(first_rtp(&call).await, 0, "a PCMU packet");
        if hark_hangs_up {
            call.control().hangup("done").await.expect("BYE answered");
            blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
        } else {
            blocking(|| phone.command("hangup", ""));
            assert_eq!(
                call.next_event_within(WAIT).await,
                Some(CallEvent::Hangup {
                    reason: HangupReason::Remote
                })
            );
            blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_the_callee_rejects_is_a_typed_error() {
    require_peers();
    captured_logs();
    let ep = Arc::new(Endpoint::start(&direct_config("")).await.unwrap());
    let mut phone = Baresip::start("callee", None);
    let target = format!("sip:callee@{}", phone.sip_addr);
    let dialing = {
        let ep = ep.clone();
        tokio::spawn(async move { ep.call(&target, WAIT).await })
    };
    blocking(|| phone.wait_event(&["CALL_INCOMING"], WAIT));
    blocking(|| phone.command("hangup", ""));
    let err = dialing.await.unwrap().unwrap_err();
    match err {
        DialError::Refused { code, .. } => assert!((400..700).contains(&code), "{code}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nobody listens on this port: no answer within the limit.
    let silent = support::sip_peers::free_udp_port();
    let err = ep
        .call(
            &format!("sip:nobody@127.0.0.1:{silent}"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::NoAnswer(_)), "{err:?}");
    assert!(matches!(
        ep.call("tel:+15551234", WAIT).await,
        Err(DialError::BadTarget(_))
    ));
}

/// A phone that rings and never answers, scripted over UDP so every message can be checked:
/// hark CANCELs when its ring limit passes, and ACKs the 487 that ends the INVITE, so the
/// phone need not resend it for 32 s (RFC 3261 §17.1.1.3; the 487 once went unacknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_rings_out_is_cancelled_and_the_487_is_acknowledged() {
    let phone = RingingPhone::dialled().await;
    // The CANCEL's 200 and the INVITE's 487 share a branch; each reaches its transaction.
    let ok = Message::response_to(&phone.cancel, 200, "OK", Some("ph0ne"));
    phone.send(&ok).await;
    let terminated = Message::response_to(&phone.invite, 487, "Request Terminated", Some("ph0ne"));
    phone.send(&terminated).await;
    let ack = phone.next("ACK").await;
    let invite = &phone.invite;
    assert_eq!(
        ack.branch(),
        invite.branch(),
        "the ACK is in the INVITE's transaction"
    );
    assert_eq!(ack.cseq(), Some((invite.cseq().unwrap().0, "ACK".into())));
    assert_eq!(ack.to_tag().as_deref(), Some("ph0ne"));
    assert_eq!(ack.call_id(), invite.call_id());
    let (_ep, err) = phone.dialling.await.unwrap();
    assert!(matches!(err, DialError::NoAnswer(_)), "{err:?}");
}

/// The phone answers just as hark gives up: its 200 crosses the CANCEL. hark ACKs the 200 and
/// hangs up with BYE at once, rather than leaving the far end with a call nobody is on.
#[tokio::test]
async fn a_call_answered_as_it_is_cancelled_is_acknowledged_and_hung_up() {
    let phone = RingingPhone::dialled().await;
    let ok = Message::response_to(&phone.cancel, 200, "OK", Some("ph0ne"));
    phone.send(&ok).await;
    let mut answered = Message::response_to(&phone.invite, 200, "OK", Some("ph0ne"));
    answered.push("Contact", format!("<sip:ringing@{}>", phone.addr()));
    phone.send(&answered).await;
    let invite = phone.invite.clone();
    let ack = phone.next("ACK").await;
    assert_ne!(
        ack.branch(),
        invite.branch(),
        "a 2xx's ACK is a transaction of its own"
    );
    assert_eq!(ack.cseq(), Some((invite.cseq().unwrap().0, "ACK".into())));
    assert_eq!(ack.to_tag().as_deref(), Some("ph0ne"));
    assert_eq!(ack.call_id(), invite.call_id());
    let bye = phone.next("BYE").await;
    assert_eq!(
        bye.cseq(),
        Some((invite.cseq().unwrap().0 + 1, "BYE".into()))
    );
    assert_eq!(bye.to_tag().as_deref(), Some("ph0ne"));
    assert_eq!(bye.call_id(), invite.call_id());
    phone
        .send(&Message::response_to(&bye, 200, "OK", Some("ph0ne")))
        .await;
    let (_ep, err) = phone.dialling.await.unwrap();
    assert!(matches!(err, DialError::NoAnswer(_)), "{err:?}");
}

/// A phone scripted over UDP that hark dials and that rings (180) until hark cancels.
struct RingingPhone {
    socket: tokio::net::UdpSocket,
    hark: std::net::SocketAddr,
    invite: Message,
    cancel: Message,
    dialling: tokio::task::JoinHandle<(Endpoint, DialError)>,
}

impl RingingPhone {
    /// hark dials the phone with a 1 s ring timeout; returns once hark's CANCEL arrived.
    async fn dialled() -> RingingPhone {
        captured_logs();
        let ep = Endpoint::start(&direct_config("")).await.unwrap();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = format!("sip:ringing@{}", socket.local_addr().unwrap());
        let dialling = tokio::spawn(async move {
            let err = ep.call(&target, Duration::from_secs(1)).await.unwrap_err();
            (ep, err)
        });
        let (invite, hark) = recv(&socket).await;
        assert_eq!(invite.method(), "INVITE");
        let ringing = Message::response_to(&invite, 180, "Ringing", Some("ph0ne"));
        socket.send_to(&ringing.to_bytes(), hark).await.unwrap();
        let cancel = next(&socket, "CANCEL").await;
        assert_eq!(
            cancel.branch(),
            invite.branch(),
            "CANCEL matches the INVITE"
        );
        assert_eq!(cancel.cseq().unwrap().0, invite.cseq().unwrap().0);
        RingingPhone {
            socket,
            hark,
            invite,
            cancel,
            dialling,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr().unwrap()
    }

    async fn next(&self, method: &str) -> Message {
        next(&self.socket, method).await
    }

    async fn send(&self, m: &Message) {
        self.socket.send_to(&m.to_bytes(), self.hark).await.unwrap();
    }
}

async fn recv(socket: &tokio::net::UdpSocket) -> (Message, std::net::SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("a message from hark")
        .unwrap();
    (Message::parse(&buf[..n]).unwrap(), from)
}

/// The next request of `method` (retransmissions of others are passed over).
async fn next(socket: &tokio::net::UdpSocket, method: &str) -> Message {
    loop {
        let (m, _) = recv(socket).await;
        if m.method() == method {
            return m;
        }
    }
}

/// baresip `caller` calls hark, hark answers; returns the answered call.
async fn answered_call_from(
    ep: &mut Endpoint,
    caller: &mut Baresip,
) -> hark::transport::sip::IncomingCall {
    let target = format!("sip:hark@{}", ep.local_addr());
    answered_call(ep, caller, &target).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_by_refer_connects_the_caller_to_the_target_and_hark_leaves() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut caller = Baresip::start("caller", None);
    let mut target = Baresip::start_with("target", None, true, None);
    let mut call = answered_call_from(&mut ep, &mut caller).await;
    let to = format!("sip:target@{}", target.sip_addr);
    let started = std::time::Instant::now();
    call.control()
        .transfer(&to)
        .await
        .unwrap_or_else(|e| panic!("transfer failed: {e}\ncaller log:\n{}", caller.log()));
    let took = started.elapsed();
    // The target got a call from the caller (not from hark) and it is up.
    let established = blocking(|| target.wait_event(&["CALL_ESTABLISHED"], WAIT));
    assert!(established.contains("sip:caller@"), "{established}");
    // The caller really executed the REFER (its log says so).
    assert!(
        caller.log().to_ascii_lowercase().contains("transfer"),
        "caller log:\n{}",
        caller.log()
    );
    // hark's leg is over: the caller's leg to hark closed, and the call reported its end.
    blocking(|| caller.wait_event(&["CALL_CLOSED", "sip:hark@"], WAIT));
    let ended = loop {
        match call.next_event_within(WAIT).await {
            Some(CallEvent::Hangup { reason }) => break reason,
            Some(_) => continue, // the caller may put hark on hold while it transfers
            None => panic!("the call ended without a Hangup event"),
        }
    };
    assert!(
        matches!(ended, HangupReason::Transferred | HangupReason::Remote),
        "{ended:?}"
    );
    assert!(call.control().hangup("again").await.is_err(), "still up");
    eprintln!("blind transfer took {took:?}, hark's leg ended: {ended:?}");
    // hark waited for the caller's NOTIFY with a 2xx sipfrag (baresip reports the target's
    // answer), not just for the REFER's 202.
    let progress: Vec<String> = logs_text()
        .lines()
        .filter(|l| l.contains("transfer progress"))
        .map(|l| {
            // Drop the log's ANSI colour codes (ESC [ ... m).
            let mut plain = String::new();
            let mut in_escape = false;
            for c in l.chars() {
                match (in_escape, c) {
                    (false, '\u{1b}') => in_escape = true,
                    (true, 'm') => in_escape = false,
                    (false, c) => plain.push(c),
                    (true, _) => {}
                }
            }
            plain
        })
        .collect();
    eprintln!("{}", progress.join("\n"));
    assert!(
        progress.iter().any(|l| l.contains("status=200")),
        "{progress:?}"
    );
    // The caller and the target are still talking to each other.
    assert!(!caller
        .events
        .iter()
        .any(|e| e.contains("CALL_CLOSED") && e.contains("sip:target@")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_is_an_error_a_person_can_understand_and_the_call_stays_up() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut caller = Baresip::start("caller", None);
    let mut refuser = Baresip::start("refuser", None);
    let call = answered_call_from(&mut ep, &mut caller).await;
    let to = format!("sip:refuser@{}", refuser.sip_addr);
    let control = call.control();
    let transfer = tokio::spawn(async move { control.transfer(&to).await });
    // The target's phone rings (the caller dialled it) and declines.
    let incoming = blocking(|| refuser.wait_event(&["CALL_INCOMING"], WAIT));
    assert!(incoming.contains("sip:caller@"), "{incoming}");
    blocking(|| refuser.command("hangup", ""));
    let err = tokio::time::timeout(WAIT, transfer)
        .await
        .expect("the transfer's outcome within 10 s of the refusal")
        .unwrap()
        .expect_err("a declined target is a failure");
    let said = err.to_string();
    eprintln!("refused transfer: {said}");
    assert!(
        [
            "the line was busy",
            "the transfer was refused",
            "nobody answered"
        ]
        .contains(&said.as_str()),
        "{said}"
    );
    // The caller is still with hark: hark can hang up normally and the caller sees it.
    call.control()
        .hangup("after the failed transfer")
        .await
        .expect("BYE in the still-open dialog answered 200");
    blocking(|| caller.wait_event(&["CALL_CLOSED", "sip:hark@"], WAIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_silent_target_gives_up_in_bounded_time_and_keeps_the_caller() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut caller = Baresip::start("caller", None);
    let mut call = answered_call_from(&mut ep, &mut caller).await;
    let silent = support::sip_peers::free_udp_port();
    let started = std::time::Instant::now();
    let err = call
        .control()
        .transfer_within(
            &format!("sip:nobody@127.0.0.1:{silent}"),
            Duration::from_secs(3),
        )
        .await
        .expect_err("nobody listens there");
    let took = started.elapsed();
    assert_eq!(err.to_string(), "nobody answered");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A bad target is refused before anything is sent, and the call is still up.
    let err = call
        .control()
        .transfer("bob smith")
        .await
        .expect_err("not a URI");
    assert!(err.to_string().contains("cannot hold"), "{err}");
    // No hangup was reported.
    while let Some(ev) = call.try_next_event() {
        assert!(!matches!(ev, CallEvent::Hangup { .. }), "{ev:?}");
    }
    call.control().hangup("done").await.expect("BYE answered");
    blocking(|| caller.wait_event(&["CALL_CLOSED", "sip:hark@"], WAIT));
}
