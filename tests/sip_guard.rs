//! The SIP endpoint's defences: the digest challenge of inbound calls (`[sip] inbound_auth`)
//! against a real baresip and a scripted caller, the malformed-message corpus in
//! `tests/sip_corpus/`, and a flood of INVITEs and garbage. Everything on loopback.
//!
//! `tests/sip.rs` already covers the allow list (403) and a first handful of malformed
//! datagrams; this file extends those rather than repeating them.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hark::config::SipConfig;
use hark::providers::http::ApiKey;
use hark::transport::sip::digest::Challenge;
use hark::transport::sip::message::Message;
use hark::transport::sip::ua::MAX_CACHED_RESPONSES;
use hark::transport::sip::Endpoint;
use hark::transport::CallControl;
use support::sip_peers::{require_peers, Baresip};
use support::sip_setup::{self as sip_setup, answered_call, blocking, logs_text};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "door-pw-4711";

/// The log capture, at INFO: the flood test counts the lines.
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    sip_setup::captured_logs_at(tracing::Level::INFO)
}

/// A direct-call endpoint on loopback letting 127.0.0.1 call, with `extra` `[sip]` lines.
/// RTP ports differ from `tests/sip.rs`'s so both suites can run at once.
fn endpoint_config(extra: &str) -> SipConfig {
    let base = 24000 + (std::process::id() % 100) * 40;
    let c: SipConfig = toml::from_str(&format!(
        "bind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\nrtp_ports = [{base}, {}]\n{extra}",
        base + 39
    ))
    .unwrap();
    c.validate().unwrap();
    c
}

fn guarded_config() -> SipConfig {
    endpoint_config(&format!(
        "inbound_auth = true\ninbound_user = \"door\"\ninbound_password = \"{PASSWORD}\""
    ))
}

/// A baresip whose current account is `door@` with `password` (added over ctrl_tcp with
/// `uanew`, made current with `uafind`), so it answers hark's challenge with it.
fn caller_with_password(password: &str) -> Baresip {
    let mut phone = Baresip::start("caller", None);
    let aor = format!("sip:door@127.0.0.1:{}", phone.sip_addr.port());
    phone.command(
        "uanew",
        &format!("<{aor}>;auth_pass={password};regint=0;audio_codecs=PCMU,PCMA;answermode=manual"),
    );
    phone.wait_event(&["\"token\":\"uanew\""], WAIT);
    phone.command("uafind", &aor);
    phone.wait_event(&["\"token\":\"uafind\""], WAIT);
    phone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_with_the_right_password_is_challenged_then_its_call_is_answered() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&guarded_config()).await.unwrap();
    let mut phone = caller_with_password(PASSWORD);
    let target = format!("sip:hark@{}", ep.local_addr());
    blocking(|| phone.command("dial", &target));
    let call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .unwrap_or_else(|_| panic!("no authenticated INVITE within 10 s:\n{}", phone.log()))
        .unwrap();
    assert!(call.from.contains("sip:door@"), "{}", call.from);
    assert_eq!(ep.stats().unauthorized.load(Relaxed), 1, "one 401 first");
    assert_eq!(ep.stats().bad_credentials.load(Relaxed), 0);
    call.answer().await.expect("ACK for our 200 OK");
    blocking(|| phone.wait_event(&["CALL_ESTABLISHED"], WAIT));
    call.control().hangup("done").await.unwrap();
    blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
    assert!(
        !logs_text().contains(PASSWORD),
        "the password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_with_a_wrong_password_is_refused_and_no_call_is_offered() {
    require_peers();
    captured_logs();
    let mut ep = Endpoint::start(&guarded_config()).await.unwrap();
    let mut phone = caller_with_password("not-the-password");
    let target = format!("sip:hark@{}", ep.local_addr());
    blocking(|| phone.command("dial", &target));
    let closed = blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
    assert!(closed.contains("403"), "{closed}");
    assert_eq!(ep.stats().unauthorized.load(Relaxed), 1);
    assert_eq!(ep.stats().bad_credentials.load(Relaxed), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ep.accept())
            .await
            .is_err(),
        "no call was offered"
    );
    assert_eq!(ep.footprint().calls, 0);
    assert!(!logs_text().contains("not-the-password"));
}

/// An INVITE with a valid SDP offer from `sock`, as a scripted caller sends it.
fn invite(sock: SocketAddr, hark: SocketAddr, call: &str, cseq: u32, extra: &str) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        sock.port()
    );
    format!(
        "INVITE sip:hark@{hark} SIP/2.0\r\nVia: SIP/2.0/UDP {sock};branch=z9hG4bK{call}{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:door@{sock}>;tag=t{call}\r\nTo: <sip:hark@{hark}>\r\n\
         Call-ID: {call}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:door@{sock}>\r\n{extra}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// Reads datagrams until a final response (≥ 200), or `None` after `limit`.
async fn final_response(sock: &UdpSocket, limit: Duration) -> Option<Message> {
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        // Lenient: a 400 echoes the request's bad CSeq, which a strict parse refuses.
        let msg = Message::parse_lenient(&buf[..n]).expect("hark's responses parse");
        if msg.code().is_some_and(|c| c >= 200) {
            return Some(msg);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_caller_answers_the_sha256_challenge_and_a_replayed_answer_is_stale() {
    captured_logs();
    let mut ep = Endpoint::start(&endpoint_config(&format!(
        "inbound_auth = true\ninbound_user = \"door\"\ninbound_password = \"{PASSWORD}\"\n\
         inbound_algorithms = [\"SHA-256\", \"MD5\"]"
    )))
    .await
    .unwrap();
    let hark = ep.local_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    sock.send_to(&invite(me, hark, "auth1", 1, ""), hark)
        .await
        .unwrap();
    let challenge = final_response(&sock, WAIT).await.expect("a 401");
    assert_eq!(challenge.code(), Some(401));
    // One challenge per header field (a challenge has commas of its own).
    let offers: Vec<&str> = challenge
        .headers
        .iter()
        .filter(|(n, _)| n == "WWW-Authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(offers.len(), 2, "{offers:?}");
    assert!(offers[0].contains("algorithm=SHA-256"), "{}", offers[0]);
    assert!(offers[1].contains("algorithm=MD5"), "{}", offers[1]);
    assert!(offers.iter().all(|o| o.contains("qop=\"auth\"")));
    let sha = Challenge::parse(offers[0]).unwrap();
    assert!(!sha.stale);
    let uri = format!("sip:hark@{hark}");
    let auth = sha.answer(
        "door",
        &ApiKey::new(PASSWORD),
        "INVITE",
        &uri,
        "0a4f113b",
        1,
    );
    let with_auth = format!("Authorization: {auth}\r\n");
    sock.send_to(&invite(me, hark, "auth1", 2, &with_auth), hark)
        .await
        .unwrap();
    let call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .expect("the authenticated INVITE is offered")
        .unwrap();
    assert!(call.from.contains("sip:door@"));
    call.control().hangup("declined by the test").await.unwrap();
    assert_eq!(final_response(&sock, WAIT).await.unwrap().code(), Some(603));
    // The same answer again, on a new call: the nonce count was used, so a fresh challenge
    // that says the credentials were right but stale.
    sock.send_to(&invite(me, hark, "auth2", 1, &with_auth), hark)
        .await
        .unwrap();
    let again = final_response(&sock, WAIT).await.unwrap();
    assert_eq!(again.code(), Some(401));
    let fresh = Challenge::parse(again.header("WWW-Authenticate").unwrap()).unwrap();
    assert!(fresh.stale, "{again:?}");
    assert_ne!(fresh.nonce, sha.nonce);
    assert_eq!(ep.stats().unauthorized.load(Relaxed), 2);
    assert_eq!(ep.stats().bad_credentials.load(Relaxed), 0);
    assert!(!logs_text().contains(PASSWORD));
}

/// What each corpus file must get: the status line's code and a phrase of its reason, or
/// `None` for a datagram that is dropped (counted, never answered).
fn corpus_expectations() -> Vec<(&'static str, Option<(u16, &'static str)>)> {
    vec![
        ("drop-truncated-headers.sip", None),
        ("drop-binary-noise.sip", None),
        ("drop-header-line-without-colon.sip", None),
        ("drop-bad-sip-version.sip", None),
        ("drop-not-utf8-headers.sip", None),
        ("drop-too-many-headers.sip", None),
        ("drop-missing-call-id.sip", None),
        ("drop-malformed-ack.sip", None),
        ("drop-status-code-out-of-range.sip", None),
        ("drop-continuation-before-any-header.sip", None),
        ("400-huge-content-length.sip", Some((400, "Content-Length"))),
        (
            "400-content-length-not-a-number.sip",
            Some((400, "Content-Length")),
        ),
        (
            "400-content-length-twice.sip",
            Some((400, "Content-Length")),
        ),
        (
            "400-negative-content-length.sip",
            Some((400, "Content-Length")),
        ),
        ("400-cseq-method-mismatch.sip", Some((400, "CSeq"))),
        ("400-cseq-not-a-number.sip", Some((400, "CSeq"))),
        ("400-cseq-huge-number.sip", Some((400, "CSeq"))),
        ("400-missing-cseq.sip", Some((400, "missing CSeq"))),
        (
            "400-invite-sdp-bad-connection-address.sip",
            Some((400, "malformed SDP: c=IN IP4 banana")),
        ),
        (
            "400-invite-sdp-port-not-a-number.sip",
            Some((400, "malformed SDP: m=audio many")),
        ),
        ("400-invite-sdp-not-sdp.sip", Some((400, "malformed SDP"))),
        (
            "488-invite-without-sdp.sip",
            Some((488, "SDP offer required")),
        ),
        (
            "488-invite-sdp-no-common-codec.sip",
            Some((488, "no common codec")),
        ),
        (
            "488-invite-sdp-no-audio-stream.sip",
            Some((488, "no audio stream")),
        ),
        ("405-unknown-method.sip", Some((405, "Method Not Allowed"))),
        (
            "481-bye-outside-any-dialog.sip",
            Some((481, "Does Not Exist")),
        ),
        (
            "481-update-outside-any-dialog.sip",
            Some((481, "Does Not Exist")),
        ),
    ]
}

/// Waits (up to 5 s) until `counter` reaches `at_least`.
async fn counted(counter: &std::sync::atomic::AtomicU64, at_least: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter.load(Relaxed) < at_least {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_malformed_corpus_gets_errors_naming_the_fault_or_is_dropped_and_calls_still_work() {
    require_peers();
    captured_logs();
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sip_corpus"));
    let expectations = corpus_expectations();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expectations.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every corpus file has an expectation here");

    let mut ep = Endpoint::start(&endpoint_config("")).await.unwrap();
    let to = ep.local_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut malformed, mut bad_offer) = (0u64, 0u64);
    for (name, expected) in &expectations {
        let data = std::fs::read(dir.join(name)).unwrap();
        sock.send_to(&data, to).await.unwrap();
        match expected {
            None => {
                malformed += 1;
                assert!(
                    counted(&ep.stats().malformed, malformed).await,
                    "{name}: not counted as malformed"
                );
                let mut buf = [0u8; 2048];
                let answer =
                    tokio::time::timeout(Duration::from_millis(150), sock.recv_from(&mut buf))
                        .await;
                assert!(answer.is_err(), "{name}: expected silence, got an answer");
            }
            Some((code, phrase)) => {
                let resp = final_response(&sock, Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|| panic!("{name}: no answer"));
                let hark::transport::sip::message::StartLine::Response { code: got, reason } =
                    &resp.start
                else {
                    unreachable!()
                };
                assert_eq!(got, code, "{name}: {reason}");
                assert!(reason.contains(phrase), "{name}: reason {reason:?}");
                if name.contains("invite") {
                    bad_offer += 1;
                } else if *code == 400 {
                    malformed += 1;
                }
            }
        }
    }
    assert_eq!(ep.stats().malformed.load(Relaxed), malformed);
    assert_eq!(ep.stats().bad_offer.load(Relaxed), bad_offer);
    assert_eq!(ep.footprint().calls, 0, "no call came of the corpus");
    // And a real call still works.
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{to}");
    let call = answered_call(&mut ep, &mut phone, &target).await;
    call.control().hangup("done").await.unwrap();
}

/// A small deterministic generator for the flood's garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends `datagrams` from `sock` to the endpoint in batches, letting it catch up between
/// them (the socket buffer would otherwise drop some, which proves nothing).
async fn pour(ep: &Endpoint, sock: &UdpSocket, datagrams: &[Vec<u8>]) {
    let to = ep.local_addr();
    for batch in datagrams.chunks(100) {
        let target = ep.stats().received.load(Relaxed) + batch.len() as u64;
        for d in batch {
            sock.send_to(d, to).await.unwrap();
        }
        // Best effort: a loaded machine may drop some; the totals are checked afterwards.
        counted(&ep.stats().received, target).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invites_and_garbage_keeps_tables_bounded_logs_quiet_and_calls_working() {
    require_peers();
    captured_logs();
    const N: usize = 10_000;
    let mut ep = Endpoint::start(&endpoint_config("")).await.unwrap();
    let hark = ep.local_addr();
    let friend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let (f, s) = (friend.local_addr().unwrap(), stranger.local_addr().unwrap());
    let allowed: Vec<Vec<u8>> = (0..N)
        .map(|i| invite(f, hark, &format!("flood-a{i}"), 1, ""))
        .collect();
    let forbidden: Vec<Vec<u8>> = (0..N)
        .map(|i| invite(s, hark, &format!("flood-f{i}"), 1, ""))
        .collect();
    let mut rng = Rng(0x5eed_1234_abcd);
    let garbage: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            if i % 2 == 0 {
                // Noise of any length up to a typical MTU.
                let len = 1 + (rng.next() % 1400) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A real INVITE cut short or with a byte flipped: gets deeper into the parser.
                let mut d = allowed[i].clone();
                let cut = 1 + (rng.next() as usize % (d.len() - 1));
                let at = rng.next() as usize % cut;
                d.truncate(cut);
                d[at] ^= 0x55;
                d
            }
        })
        .collect();
    let logs_before = logs_text().lines().count();
    let sent = (allowed.len() + forbidden.len() + garbage.len()) as u64;
    let received_before = ep.stats().received.load(Relaxed);
    pour(&ep, &stranger, &forbidden).await;
    pour(&ep, &friend, &allowed).await;
    pour(&ep, &friend, &garbage).await;
    let received = ep.stats().received.load(Relaxed) - received_before;
    assert!(
        received * 10 >= sent * 9,
        "only {received} of {sent} datagrams reached the endpoint"
    );
    // Bounded: one call rings (max_sessions = 1), the rest were busy or refused.
    let fp = ep.footprint();
    assert!(fp.calls <= 1, "{fp:?}");
    assert!(fp.cached_responses <= MAX_CACHED_RESPONSES, "{fp:?}");
    assert!(fp.cache_order <= MAX_CACHED_RESPONSES, "{fp:?}");
    let stats = ep.stats();
    let forbidden_n = stats.forbidden.load(Relaxed);
    assert!(forbidden_n as usize >= N * 9 / 10, "{forbidden_n} refused");
    assert!(stats.busy.load(Relaxed) as usize >= N * 8 / 10);
    assert!(stats.malformed.load(Relaxed) as usize >= N / 2);
    // Logs rate-limited: the first 10 and every 100th of each kind, not one line per datagram.
    let lines = logs_text().lines().count() - logs_before;
    assert!(
        lines < 600,
        "{lines} log lines for {sent} hostile datagrams"
    );
    // The first flood INVITE, retransmitted after its cached response was pushed out by the
    // rest: still recognised as that ringing call (180 again), not a loop (482).
    let mut buf = vec![0u8; 65536];
    // First drain what the flood left queued (the first 180 among it).
    while tokio::time::timeout(Duration::from_millis(100), friend.recv_from(&mut buf))
        .await
        .is_ok()
    {}
    friend.send_to(&allowed[0], hark).await.unwrap();
    let again = loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), friend.recv_from(&mut buf))
            .await
            .expect("an answer to the retransmitted INVITE")
            .unwrap();
        let m = Message::parse_lenient(&buf[..n]).unwrap();
        if m.call_id() == "flood-a0" && m.code() != Some(100) {
            break m;
        }
    };
    assert_eq!(again.code(), Some(180), "{again:?}");
    // The one flood call that rang is the application's to refuse; then a real call works.
    let flood_call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(flood_call.id.starts_with("flood-a"), "{}", flood_call.id);
    flood_call.control().hangup("flood").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ep.accept())
            .await
            .is_err(),
        "only one call was offered"
    );
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{hark}");
    let call = answered_call(&mut ep, &mut phone, &target).await;
    call.control().hangup("done").await.unwrap();
}

/// Sends `datagrams` in batches of 100, waiting after each (up to 5 s) until `counter` has
/// counted them: a socket buffer overrun would drop some, which proves nothing.
async fn pour_counted(
    sock: &UdpSocket,
    to: SocketAddr,
    datagrams: &[Vec<u8>],
    counter: &std::sync::atomic::AtomicU64,
) {
    for batch in datagrams.chunks(100) {
        let target = counter.load(Relaxed) + batch.len() as u64;
        for d in batch {
            sock.send_to(d, to).await.unwrap();
        }
        assert!(
            counted(counter, target).await,
            "{} of {target} counted",
            counter.load(Relaxed)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_rtp_session_refuses_malformed_rtp_and_rtcp_floods_and_keeps_receiving() {
    use hark::transport::sip::media::g711::G711;
    use hark::transport::sip::media::session::{Latch, MediaConfig, RtpSession};
    captured_logs();
    let rtp_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtcp_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtcp_to = rtcp_sock.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = MediaConfig::new("127.0.0.1:9".parse().unwrap(), G711::Pcmu);
    cfg.latch = Latch::SameHost;
    let (session, _streams) = RtpSession::start_with_rtcp(rtp_sock, Some(rtcp_sock), cfg).unwrap();
    let to = session.local_addr();
    let header = |first: u8| {
        let mut h = vec![first, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0xab, 0xcd];
        h.extend_from_slice(&[0xff; 160]);
        h
    };
    // RTP: every wrong version, every truncated header, every CSRC count the packet cannot hold.
    let mut rtp_junk: Vec<Vec<u8>> = vec![header(0x00), header(0x40), header(0xc0)];
    rtp_junk.extend((1..12).map(|n| header(0x80)[..n].to_vec()));
    rtp_junk.extend((1..16u8).map(|cc| header(0x80 | cc)[..12 + 4 * usize::from(cc) - 1].to_vec()));
    let mut rng = Rng(0xbad_5eed);
    rtp_junk.extend((0..10_000).map(|_| {
        let len = 1 + (rng.next() % 600) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        d[0] &= 0x7f; // never version 2 (bit 7 clear: version 0 or 1)
        d
    }));
    // RTCP: wrong versions, a length beyond the datagram, cut headers, RTP on the RTCP port,
    // and padding that claims more than the packet.
    let sr = |first: u8, len_words: u16| {
        let mut p = vec![first, 200];
        p.extend_from_slice(&len_words.to_be_bytes());
        p.extend_from_slice(&[0u8; 24]);
        p
    };
    let mut rtcp_junk: Vec<Vec<u8>> = vec![sr(0x40, 6), sr(0xc0, 6), sr(0x00, 6), sr(0x80, 200)];
    rtcp_junk.extend((1..4).map(|n| sr(0x80, 6)[..n].to_vec()));
    rtcp_junk.push(vec![0x80, 0, 0, 1, 0, 0, 0, 1]); // payload type 0: RTP, not RTCP
    let mut padded = sr(0xa0, 6);
    *padded.last_mut().unwrap() = 200;
    rtcp_junk.push(padded);
    rtcp_junk.extend((0..2_000).map(|_| {
        let len = 4 + (rng.next() % 200) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        d[0] &= 0x7f;
        d
    }));
    let stats = session.stats().clone();
    pour_counted(&peer, to, &rtp_junk, &stats.malformed).await;
    pour_counted(&peer, rtcp_to, &rtcp_junk, &stats.rtcp_malformed).await;
    assert_eq!(stats.malformed.load(Relaxed), rtp_junk.len() as u64);
    assert_eq!(stats.rtcp_malformed.load(Relaxed), rtcp_junk.len() as u64);
    assert_eq!(
        stats.received.load(Relaxed),
        0,
        "nothing malformed was taken as media"
    );
    assert!(session.is_running());
    // Real packets still get through.
    for k in 0..10u16 {
        let mut p = header(0x80);
        p[2..4].copy_from_slice(&k.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(k) * 160).to_be_bytes());
        peer.send_to(&p, to).await.unwrap();
    }
    assert!(
        counted(&stats.received, 10).await,
        "valid RTP after the junk"
    );
    // And the log stayed short: one warning per kind for the first 10, then every 100th.
    let refusals = logs_text()
        .lines()
        .filter(|l| l.contains("RTCP datagram refused") || l.contains("RTP datagram refused"))
        .count();
    assert!(refusals < 400, "{refusals} log lines");
}
