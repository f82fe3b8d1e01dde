//! SIP over TCP against real peers: kamailio listening on TCP as registrar and proxy, baresip
//! calling over TCP through it, and raw TCP clients sending what a broken or hostile peer
//! would. Everything runs on loopback, on ports picked per test.

mod support;

use std::time::Duration;

use hark::transport::sip::{Endpoint, RegisterError, RegistrationState};
use support::sip_peers::{require_peers, Baresip, Kamailio, DOMAIN};
use support::sip_setup::{
    answered_call, blocking, captured_logs, config, first_rtp, hang_up, logs_text, registered,
    registered_over,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// An endpoint on TCP registering with `kam` as `hark` with `password`.
async fn registering(kam: &Kamailio, password: &str) -> Endpoint {
    Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\ntransport = \"tcp\"\nregistrar = \"{}\"\nuser = \"hark\"\n\
         password = \"{password}\"\ndomain = \"{DOMAIN}\"\nexpires = 120\n\
         rtp_ports = [{}, {}]",
        kam.addr,
        21000 + (std::process::id() % 200) * 40,
        21000 + (std::process::id() % 200) * 40 + 39
    )))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tcp_with_digest_and_unregisters_on_shutdown() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start_tcp(&[("hark", "tcp-pass-4711")], "MD5");
    let ep = registering(&kam, "tcp-pass-4711").await;
    let mut rx = ep.registration();
    assert_eq!(
        registered(&ep).await,
        RegistrationState::Registered { expires: 120 },
        "{}",
        kam.log()
    );
    // kamailio saw the REGISTERs arrive over TCP, with hark's TCP Via and Contact.
    registered_over(&kam, &ep, "tcp");
    let log = kam.log();
    assert!(log.contains("AUTH Digest"), "{log}");
    ep.shutdown().await;
    assert_eq!(*rx.borrow_and_update(), RegistrationState::Unregistered);
    assert!(
        !logs_text().contains("tcp-pass-4711"),
        "the password reached the log"
    );
}

/// The source `ip:port` in a kamailio request log line.
fn source(line: &str) -> String {
    line.split(" from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_hark_through_kamailio_over_tcp_with_media_both_ways_of_hanging_up() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start_tcp(
        &[("hark", "hark-tcp-pass"), ("caller", "caller-tcp-pass")],
        "MD5",
    );
    let mut ep = registering(&kam, "hark-tcp-pass").await;
    assert!(matches!(
        registered(&ep).await,
        RegistrationState::Registered { .. }
    ));
    let mut phone = Baresip::start_tcp("caller", kam.addr, "caller-tcp-pass");
    blocking(|| phone.wait_log("200 OK (kamailio", WAIT));
    for hark_hangs_up in [false, true] {
        let target = format!("sip:hark@{DOMAIN}");
        let mut call = answered_call(&mut ep, &mut phone, &target).await;
        assert!(call.to.contains(&format!("hark@{DOMAIN}")), "{}", call.to);
        // Media flows: baresip's tone arrives at the RTP socket the SDP answer named.
        first_rtp(&call).await;
        // hark's BYE goes through kamailio (it record-routed the INVITE), over TCP.
        hang_up(&mut call, &mut phone, hark_hangs_up).await;
    }
    // Every request of the calls reached kamailio over TCP, hark's BYE among them.
    let log = kam.log();
    let (invites, byes) = (kam.requests("INVITE"), kam.requests("BYE"));
    assert_eq!(invites.len(), 2, "{log}");
    assert_eq!(byes.len(), 2, "{log}");
    for r in invites.iter().chain(&byes) {
        assert!(r.contains("proto=tcp"), "{r}");
    }
    assert!(
        byes.iter().any(|b| b.contains("via=SIP/2.0/TCP")
            && b.contains(&format!(
                "contact=<sip:hark@{};transport=tcp>",
                ep.local_addr()
            ))),
        "hark's BYE: {byes:#?}"
    );
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_restart_closes_the_connection_and_hark_registers_again_over_a_new_one() {
    require_peers();
    captured_logs();
    let mut kam = Kamailio::start_tcp(&[("hark", "restart-tcp-pass")], "MD5");
    let ep = registering(&kam, "restart-tcp-pass").await;
    assert!(matches!(
        registered(&ep).await,
        RegistrationState::Registered { .. }
    ));
    let before = kam.requests("REGISTER");
    let first_source = source(before.last().unwrap());
    let mut rx = ep.registration();
    rx.borrow_and_update();
    let restarted = std::time::Instant::now();
    blocking(|| kam.restart());
    // The lost connection is noticed at once (not at the next refresh, 96 s away) ...
    let lost = tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| matches!(s, RegistrationState::Failed(_))),
    )
    .await
    .expect("the connection loss is noticed")
    .unwrap()
    .clone();
    assert!(
        matches!(
            lost,
            RegistrationState::Failed(RegisterError::ConnectionLost(_))
                | RegistrationState::Failed(RegisterError::Unreachable(_))
        ),
        "{lost:?}"
    );
    // ... and hark registers again after the backoff, over a new connection.
    tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|s| matches!(s, RegistrationState::Registered { .. })),
    )
    .await
    .expect("registered with the restarted registrar within 15 s")
    .unwrap();
    let took = restarted.elapsed();
    let log = kam.log();
    let after: Vec<String> = kam.requests("REGISTER").split_off(before.len());
    assert!(!after.is_empty(), "{log}");
    for r in &after {
        assert!(r.contains("proto=tcp"), "{r}");
        assert_ne!(source(r), first_source, "a new connection: {r}");
    }
    eprintln!("registered again over a new TCP connection {took:?} after the restart began");
    ep.shutdown().await;
}

/// Sends `data` on `stream` and reads until the peer closes it (`None` if it stays open for
/// 5 s), returning what came back first.
async fn closed_after(stream: &mut TcpStream, data: &[u8]) -> Option<Vec<u8>> {
    stream.write_all(data).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads one SIP response (head and Content-Length body) from `stream`; bytes read past it
/// stay in `pending` for the next call.
async fn response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(pending).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if pending.len() >= end + 4 + len {
                let rest = pending.split_off(end + 4 + len);
                let msg = String::from_utf8_lossy(pending).into_owned();
                *pending = rest;
                return msg;
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "closed instead of answering: {text}");
        pending.extend_from_slice(&buf[..n]);
    }
}

fn options(branch: &str, content_length: &str) -> String {
    format!(
        "OPTIONS sip:hark@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t{branch}\r\nTo: <sip:hark@127.0.0.1>\r\n\
         Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\n{content_length}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_closes_that_connection_and_the_endpoint_keeps_serving_others() {
    captured_logs();
    let ep = Endpoint::start(&config(
        "bind = \"127.0.0.1:0\"\ntransport = \"tcp\"\nallow = [\"127.0.0.1\"]",
    ))
    .await
    .unwrap();
    let addr = ep.local_addr();
    let mut good = TcpStream::connect(addr).await.unwrap();
    let mut good_rest = Vec::new();
    // Keep-alive: a ping gets a pong.
    good.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, good.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    for (what, bytes) in [
        (
            "a Content-Length over the cap",
            options("huge", "Content-Length: 100000\r\n").into_bytes(),
        ),
        ("no Content-Length", options("nolen", "").into_bytes()),
        ("garbage without an end of headers", vec![0xAB; 70_000]),
    ] {
        let mut bad = TcpStream::connect(addr).await.unwrap();
        let answer = closed_after(&mut bad, &bytes).await;
        assert_eq!(answer, Some(Vec::new()), "{what}: closed without an answer");
    }
    // A framed message that is not valid SIP gets 400 on its connection, which stays open.
    let mut framed = TcpStream::connect(addr).await.unwrap();
    let mut framed_rest = Vec::new();
    let no_cseq = options("nocseq", "Content-Length: 0\r\n").replace("CSeq: 1 OPTIONS\r\n", "");
    framed.write_all(no_cseq.as_bytes()).await.unwrap();
    let bad_request = response(&mut framed, &mut framed_rest).await;
    assert!(bad_request.starts_with("SIP/2.0 400 "), "{bad_request}");
    framed
        .write_all(options("again", "Content-Length: 0\r\n").as_bytes())
        .await
        .unwrap();
    assert!(response(&mut framed, &mut framed_rest)
        .await
        .starts_with("SIP/2.0 200 "));
    // The first connection is still served, two requests in one write.
    let two = format!(
        "{}{}",
        options("one", "Content-Length: 0\r\n"),
        options("two", "Content-Length: 0\r\n")
    );
    good.write_all(two.as_bytes()).await.unwrap();
    let first = response(&mut good, &mut good_rest).await;
    assert!(first.starts_with("SIP/2.0 200 OK\r\n"), "{first}");
    assert!(first.contains("branch=z9hG4bKone"), "{first}");
    let second = response(&mut good, &mut good_rest).await;
    assert!(second.contains("branch=z9hG4bKtwo"), "{second}");
    ep.shutdown().await;
}
