//! hark holding and resuming calls by re-INVITE, as a specification: against baresip (which
//! answers hark's `sendonly` with `recvonly` and keeps hearing hark), and against a scripted
//! peer for what baresip cannot be made to do (491 glare, 481, an unusable answer, a re-INVITE
//! crossing hark's).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hark::config::SipConfig;
use std::sync::atomic::Ordering;

use hark::transport::sip::media::{MediaConfig, MediaEvent, MediaStreams, RtpSession, G711};
use hark::transport::sip::message::Message;
use hark::transport::sip::{
    CallEvent, DialError, Direction, Endpoint, HangupReason, IncomingCall, NegotiatedMedia,
};
use hark::transport::CallControl;
use support::sip_peers::{require_peers, Baresip};
use support::sip_setup::{answered_call, blocking, config};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);

/// A direct-call endpoint on loopback that lets loopback peers call (RTP ports apart from
/// tests/sip.rs's).
fn direct_config(extra: &str) -> SipConfig {
    let base = 24000 + (std::process::id() % 200) * 40;
    config(&format!(
        "bind = \"127.0.0.1:0\"\nallow = [\"127.0.0.1\"]\nrtp_ports = [{base}, {}]\n{extra}",
        base + 39
    ))
}

/// A 20 ms frame of a `freq` Hz tone at 16 kHz, frame number `k`.
fn tone_frame(freq: f32, k: usize) -> Vec<f32> {
    (0..320)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * freq * (k * 320 + i) as f32 / 16_000.0).sin())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_holds_baresip_which_answers_recvonly_keeps_receiving_hark_and_is_resumed() {
    require_peers();
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start("caller", None);
    let target = format!("sip:hark@{}", ep.local_addr());
    let call = answered_call(&mut ep, &mut phone, &target).await;
    let control = call.control();
    let media = call.media.clone();
    let (socket, rtcp, mut events) = call.into_parts();
    let rtp_port = socket.local_addr().unwrap().port();
    assert!(!control.is_held());

    // hark holds before it has sent any RTP, so whatever baresip receives from hark's RTP
    // port, it receives while held.
    control.hold().await.expect("baresip accepts the hold");
    assert!(control.is_held());
    blocking(|| phone.wait_event(&["CALL_REMOTE_SDP", "offer"], WAIT));
    match tokio::time::timeout(WAIT, events.recv()).await {
        // hark's side of baresip's answer: baresip answered `recvonly`, so hark only sends.
        Ok(Some(CallEvent::MediaChanged(m))) => {
            assert_eq!(m.direction, Direction::SendOnly, "{m:?}");
            assert_eq!(
                (m.payload_type, m.remote),
                (media.payload_type, media.remote)
            );
        }
        other => panic!("expected MediaChanged after the hold, got {other:?}"),
    }
    let from_hark =
        format!("incoming rtp for 'audio' established, receiving from 127.0.0.1:{rtp_port}");
    assert!(!phone.log().contains(&from_hark), "no RTP from hark yet");

    // While held, hark plays hold music (a 1 kHz tone here) through a running media session.
    let (rtp, mut streams) = RtpSession::start_with_rtcp(
        socket,
        Some(rtcp),
        MediaConfig {
            telephone_event: media.telephone_event,
            ..MediaConfig::new(
                media.remote,
                G711::from_payload_type(media.payload_type).unwrap(),
            )
        },
    )
    .unwrap();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    for k in 0..100 {
        clock.tick().await;
        streams.outbound.push(&tone_frame(1000.0, k));
    }
    assert!(
        rtp.stats().sent.load(Ordering::Relaxed) >= 90,
        "2 s of packets sent while held"
    );
    // baresip 1.0 stops feeding its `sndfile` recording after any re-INVITE (its own hold
    // too), so its log is the witness that hark's audio reached it during the hold.
    blocking(|| phone.wait_log(&from_hark, WAIT));

    control.resume().await.expect("baresip accepts the resume");
    assert!(!control.is_held());
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(CallEvent::MediaChanged(m))) => assert_eq!(m.direction, Direction::SendRecv),
        other => panic!("expected MediaChanged after the resume, got {other:?}"),
    }
    // Resumed: baresip sends again, and hark's session receives its audio.
    let received = rtp.stats().received.load(Ordering::Relaxed);
    let more = async {
        while rtp.stats().received.load(Ordering::Relaxed) < received + 25 {
            streams.inbound_notify.notified().await;
        }
    };
    tokio::time::timeout(WAIT, more)
        .await
        .expect("baresip's audio reaches hark after the resume");
    control.hangup("done").await.unwrap();
    blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_holds_and_resumes_a_call_it_placed_to_baresip() {
    require_peers();
    let ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut phone = Baresip::start_with("callee", None, true, None);
    let target = format!("sip:callee@{}", phone.sip_addr);
    let mut call = ep.call(&target, WAIT).await.expect("baresip answers");
    blocking(|| phone.wait_event(&["CALL_ESTABLISHED"], WAIT));
    let control = call.control();
    // The 2xx to hark's re-INVITE reaches its transaction (it is not taken for a
    // retransmission of the first INVITE's 2xx, which hark answers with the first ACK).
    control.hold().await.expect("held");
    assert!(control.is_held());
    match call.next_event_within(WAIT).await {
        Some(CallEvent::MediaChanged(m)) => assert_eq!(m.direction, Direction::SendOnly),
        other => panic!("expected MediaChanged, got {other:?}"),
    }
    control.resume().await.expect("resumed");
    match call.next_event_within(WAIT).await {
        Some(CallEvent::MediaChanged(m)) => assert_eq!(m.direction, Direction::SendRecv),
        other => panic!("expected MediaChanged, got {other:?}"),
    }
    control.hangup("done").await.expect("BYE answered");
    blocking(|| phone.wait_event(&["CALL_CLOSED"], WAIT));
}

/// A hand-written peer that calls hark and then answers hark's re-INVITEs as each test says.
struct Peer {
    sock: UdpSocket,
    hark: SocketAddr,
    hark_tag: String,
    call_id: String,
    cseq: u32,
    /// Extra header lines of the INVITE, re-INVITEs and UPDATEs (session timers).
    invite_extra: String,
    /// How long to wait for each message hark sends.
    patience: Duration,
}

const PEER_SDP: &str = "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
     m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
     a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

impl Peer {
    /// Calls `ep` and returns the answered call.
    async fn call(ep: &mut Endpoint, name: &str) -> (Peer, IncomingCall) {
        Self::call_with(ep, name, "").await
    }

    /// A peer that has not called yet; `invite_extra` goes into its INVITEs.
    async fn new(ep: &Endpoint, name: &str, invite_extra: &str) -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            hark: ep.local_addr(),
            hark_tag: String::new(),
            call_id: format!("{name}-call"),
            cseq: 0,
            invite_extra: invite_extra.to_owned(),
            patience: Duration::from_secs(5),
        }
    }

    /// Calls `ep` with `invite_extra` in the INVITE and returns the answered call.
    async fn call_with(ep: &mut Endpoint, name: &str, invite_extra: &str) -> (Peer, IncomingCall) {
        let mut peer = Peer::new(ep, name, invite_extra).await;
        peer.send_request("INVITE", "inv1", PEER_SDP).await;
        peer.expect_response("180").await;
        let call = tokio::time::timeout(WAIT, ep.accept())
            .await
            .unwrap()
            .unwrap();
        let answering = tokio::spawn(async move {
            let r = call.answer().await;
            (call, r)
        });
        let ok = peer.expect_response("200").await;
        peer.hark_tag = ok.to_tag().unwrap();
        peer.send_request("ACK", "ack1", "").await;
        let (call, answered) = answering.await.unwrap();
        answered.unwrap();
        (peer, call)
    }

    async fn send_request(&mut self, method: &str, branch: &str, body: &str) {
        let me = self.sock.local_addr().unwrap();
        let to_tag = if self.hark_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.hark_tag)
        };
        if method != "ACK" {
            self.cseq += 1;
        }
        let mut ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        if method == "INVITE" || method == "UPDATE" {
            ct.push_str(&self.invite_extra);
        }
        let msg = format!(
            "{method} sip:hark@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:peer@{me}>;tag=peer\r\nTo: <sip:hark@{0}>{to_tag}\r\n\
             Call-ID: {1}\r\nCSeq: {2} {method}\r\nContact: <sip:peer@{me}>\r\n\
             {ct}Content-Length: {3}\r\n\r\n{body}",
            self.hark,
            self.call_id,
            self.cseq,
            body.len()
        );
        self.sock.send_to(msg.as_bytes(), self.hark).await.unwrap();
    }

    /// The next message that satisfies `want` (others are skipped), within `patience`.
    async fn next(&self, what: &str, want: impl Fn(&Message) -> bool) -> Message {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout(self.patience, self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {what} within {:?}", self.patience))
                .unwrap();
            let msg = Message::parse(&buf[..n]).unwrap();
            if want(&msg) {
                return msg;
            }
        }
    }

    async fn expect_response(&self, status: &str) -> Message {
        let code: u16 = status.parse().unwrap();
        self.next(status, |m| m.code() == Some(code)).await
    }

    async fn expect_request(&self, method: &str) -> Message {
        self.next(method, |m| m.code().is_none() && m.method() == method)
            .await
    }

    /// Answers hark's request `req` with `code` (and an SDP body when given).
    async fn respond(&self, req: &Message, code: u16, reason: &str, sdp: Option<&str>) {
        let mut resp = Message::response_to(req, code, reason, None);
        let me = self.sock.local_addr().unwrap();
        resp.push("Contact", format!("<sip:peer@{me}>"));
        if let Some(body) = sdp {
            resp.set_body("application/sdp", body.as_bytes().to_vec());
        }
        self.sock
            .send_to(&resp.to_bytes(), self.hark)
            .await
            .unwrap();
    }
}

/// hark hangs up; the peer answers the BYE.
async fn hang_up(peer: &Peer, control: &hark::transport::sip::CallHandle) {
    let answer = async {
        let bye = peer.expect_request("BYE").await;
        peer.respond(&bye, 200, "OK", None).await;
    };
    let (done, ()) = tokio::join!(control.hangup("done"), answer);
    done.expect("the BYE is answered");
}

fn sdp_of(msg: &Message) -> String {
    String::from_utf8(msg.body.clone()).unwrap()
}

fn cseq(msg: &Message) -> u32 {
    msg.cseq().unwrap().0
}

/// The `o=` line's session id and version.
fn origin(sdp: &str) -> (String, u64) {
    let o = sdp.lines().find(|l| l.starts_with("o=")).unwrap();
    let parts: Vec<&str> = o.split_whitespace().collect();
    (parts[1].to_owned(), parts[2].parse().unwrap())
}

fn recvonly_answer() -> String {
    PEER_SDP.replace("a=sendrecv", "a=recvonly")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_met_by_491_is_acked_retried_with_the_next_cseq_and_then_applied() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let (mut peer, mut call) = Peer::call(&mut ep, "glare").await;
    let control = call.control();
    let rtp_port = call.rtp_socket.local_addr().unwrap().port();
    let holding = tokio::spawn({
        let c = control.clone();
        async move { c.hold().await }
    });

    let first = peer.expect_request("INVITE").await;
    let offer = sdp_of(&first);
    assert!(offer.contains("a=sendonly\r\n"), "{offer}");
    assert!(
        offer.contains(&format!("m=audio {rtp_port} RTP/AVP 0 101\r\n")),
        "{offer}"
    );
    let (session, version) = origin(&offer);
    assert_eq!(version, 2, "the answer was version 1: {offer}");
    assert_eq!(first.to_tag().as_deref(), Some("peer"), "in the dialog");
    assert_eq!(
        cseq(&first),
        2,
        "hark's first request after the INVITE's CSeq 1"
    );
    peer.respond(&first, 491, "Request Pending", None).await;
    let ack = peer.expect_request("ACK").await;
    assert_eq!(ack.header("CSeq"), Some(&*format!("{} ACK", cseq(&first))));
    assert_eq!(
        ack.branch(),
        first.branch(),
        "a non-2xx ACK is in the INVITE's transaction"
    );

    // Not the Call-ID's owner (the peer called): the retry comes within 0–2 s.
    let second = peer.expect_request("INVITE").await;
    assert_eq!(cseq(&second), cseq(&first) + 1);
    assert_ne!(second.branch(), first.branch());
    let (session2, version2) = origin(&sdp_of(&second));
    assert_eq!((session2, version2), (session.clone(), version + 1));
    assert!(!holding.is_finished(), "hold waits for its answer");
    peer.respond(&second, 200, "OK", Some(&recvonly_answer()))
        .await;
    let ack = peer.expect_request("ACK").await;
    assert_eq!(ack.header("CSeq"), Some(&*format!("{} ACK", cseq(&second))));
    assert_ne!(
        ack.branch(),
        second.branch(),
        "a 2xx ACK is a transaction of its own"
    );
    holding.await.unwrap().expect("the retried hold succeeds");
    assert!(control.is_held());
    match call.next_event_within(WAIT).await {
        Some(CallEvent::MediaChanged(m)) => assert_eq!(m.direction, Direction::SendOnly),
        other => panic!("expected MediaChanged, got {other:?}"),
    }
    // A retransmitted 200 (our ACK was lost) gets the same ACK again.
    peer.respond(&second, 200, "OK", Some(&recvonly_answer()))
        .await;
    let again = peer.expect_request("ACK").await;
    assert_eq!(again.to_bytes(), ack.to_bytes());

    // While hark holds, a peer re-INVITE offering sendrecv is answered sendonly.
    peer.send_request("INVITE", "peer-reinv", PEER_SDP).await;
    let ok = peer.expect_response("200").await;
    assert!(sdp_of(&ok).contains("a=sendonly\r\n"), "{}", sdp_of(&ok));
    assert_eq!(origin(&sdp_of(&ok)).0, session);
    peer.send_request("ACK", "peer-ack", "").await;

    let resuming = tokio::spawn({
        let c = control.clone();
        async move { c.resume().await }
    });
    let third = peer.expect_request("INVITE").await;
    assert!(sdp_of(&third).contains("a=sendrecv\r\n"));
    assert!(cseq(&third) > cseq(&second));
    assert!(
        origin(&sdp_of(&third)).1 > origin(&sdp_of(&ok)).1,
        "versions only grow"
    );
    peer.respond(&third, 200, "OK", Some(PEER_SDP)).await;
    peer.expect_request("ACK").await;
    resuming.await.unwrap().expect("resumed");
    assert!(!control.is_held());
    hang_up(&peer, &control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reinvite_crossing_harks_gets_491_and_harks_still_completes() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let (mut peer, call) = Peer::call(&mut ep, "cross").await;
    let control = call.control();
    let holding = tokio::spawn({
        let c = control.clone();
        async move { c.hold().await }
    });
    let ours = peer.expect_request("INVITE").await;
    peer.send_request(
        "INVITE",
        "crossing",
        &PEER_SDP.replace("sendrecv", "sendonly"),
    )
    .await;
    peer.expect_response("491").await;
    // A second hold while the first is in flight is refused at once, not queued.
    let err = control.hold().await.unwrap_err();
    assert!(err.to_string().contains("already under way"), "{err}");
    peer.respond(&ours, 200, "OK", Some(&recvonly_answer()))
        .await;
    peer.expect_request("ACK").await;
    holding.await.unwrap().expect("hark's hold completes");
    assert!(control.is_held());
    hang_up(&peer, &control).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_481_to_the_hold_means_the_call_is_gone_and_it_ends_as_lost() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let (peer, mut call) = Peer::call(&mut ep, "gone").await;
    let control = call.control();
    let holding = tokio::spawn({
        let c = control.clone();
        async move { c.hold().await }
    });
    let ours = peer.expect_request("INVITE").await;
    peer.respond(&ours, 481, "Call/Transaction Does Not Exist", None)
        .await;
    peer.expect_request("ACK").await;
    let err = holding.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::Lost
        })
    );
    let bye = peer.expect_request("BYE").await;
    peer.respond(&bye, 481, "Call/Transaction Does Not Exist", None)
        .await;
    assert!(control.hold().await.is_err(), "the call is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_answer_or_a_refusal_leaves_the_call_and_its_media_as_they_were() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let (peer, mut call) = Peer::call(&mut ep, "unusable").await;
    let control = call.control();
    let holding = tokio::spawn({
        let c = control.clone();
        async move { c.hold().await }
    });
    let ours = peer.expect_request("INVITE").await;
    // 200 with an SDP that has no audio stream at all.
    peer.respond(&ours, 200, "OK", Some("v=0\r\ns=-\r\nt=0 0\r\n"))
        .await;
    let ack = peer.expect_request("ACK").await;
    assert_eq!(
        cseq(&ack),
        cseq(&ours),
        "even an unusable 2xx is acknowledged"
    );
    let err = holding.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("unusable"), "{err}");
    assert!(!control.is_held());
    assert_eq!(call.try_next_event(), None, "no media change reported");

    let holding = tokio::spawn({
        let c = control.clone();
        async move { c.hold().await }
    });
    let ours = peer.expect_request("INVITE").await;
    peer.respond(&ours, 488, "Not Acceptable Here", None).await;
    peer.expect_request("ACK").await;
    let err = holding.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("488"), "{err}");
    assert!(!control.is_held());
    assert_eq!(call.try_next_event(), None, "the call is still up");
    hang_up(&peer, &control).await;
}

/// The media a re-INVITE settled on, as signalling hands it to [`RtpSession::retarget`].
fn negotiated(remote: SocketAddr, codec: G711, telephone_event: Option<u8>) -> NegotiatedMedia {
    NegotiatedMedia {
        remote,
        payload_type: codec.payload_type(),
        codec: if codec == G711::Pcmu { "PCMU" } else { "PCMA" },
        clock_rate: 8000,
        telephone_event,
        direction: Direction::SendRecv,
        ptime_ms: 20,
    }
}

/// Reads what arrived on `streams.inbound` so far.
fn drain(streams: &mut MediaStreams) -> Vec<f32> {
    let ready = streams.inbound.slots();
    let chunk = streams.inbound.read_chunk(ready).unwrap();
    let (x, y) = chunk.as_slices();
    let out = [x, y].concat();
    chunk.commit_all();
    out
}

/// Whether `x` is mostly a `freq` Hz tone at 16 kHz (Goertzel power against total power).
fn mostly_tone(x: &[f32], freq: f32) -> bool {
    let w = 2.0 * std::f32::consts::PI * freq / 16_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0f32, 0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let total: f32 = x.iter().map(|v| v * v).sum();
    total > 1e-3 && 2.0 * power / x.len() as f32 / total > 0.5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retarget_mid_stream_moves_the_media_to_a_new_peer_and_codec_without_new_rings() {
    let bind = || UdpSocket::bind("127.0.0.1:0");
    let (a, b, c) = (
        bind().await.unwrap(),
        bind().await.unwrap(),
        bind().await.unwrap(),
    );
    let (aa, ba, ca) = (
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        c.local_addr().unwrap(),
    );
    // hark (A) talks to B in PCMU; C, where a re-INVITE will move the call, speaks PCMA.
    let (ra, mut sa) = RtpSession::start(a, MediaConfig::new(ba, G711::Pcmu)).unwrap();
    let (rb, mut sb) = RtpSession::start(b, MediaConfig::new(aa, G711::Pcmu)).unwrap();
    let (rc, mut sc) = RtpSession::start(c, MediaConfig::new(aa, G711::Pcma)).unwrap();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let mut k = 0;
    // 1 s: A sends 1 kHz; B answers with 600 Hz; C sends 1.5 kHz (refused: A has not latched it).
    for _ in 0..50 {
        clock.tick().await;
        sa.outbound.push(&tone_frame(1000.0, k));
        sb.outbound.push(&tone_frame(600.0, k));
        sc.outbound.push(&tone_frame(1500.0, k));
        k += 1;
    }
    assert!(mostly_tone(&drain(&mut sb)[8000..], 1000.0), "B hears A");
    assert!(mostly_tone(&drain(&mut sa)[8000..], 600.0), "A hears B");
    drain(&mut sc);
    let b_before = rb.stats().received.load(Ordering::Relaxed);
    assert!(
        ra.stats().rejected.load(Ordering::Relaxed) > 0,
        "C was not A's peer"
    );

    ra.retarget(&negotiated(ca, G711::Pcma, Some(101)))
        .await
        .unwrap();
    for _ in 0..75 {
        clock.tick().await;
        sa.outbound.push(&tone_frame(1000.0, k));
        sb.outbound.push(&tone_frame(600.0, k));
        sc.outbound.push(&tone_frame(1500.0, k));
        k += 1;
    }
    // C hears A's voice in PCMA (a PCMU packet would count as malformed there).
    let at_c = drain(&mut sc);
    assert!(at_c.len() >= 16_000, "{} samples", at_c.len());
    assert!(mostly_tone(&at_c[at_c.len() - 8000..], 1000.0), "C hears A");
    assert_eq!(rc.stats().malformed.load(Ordering::Relaxed), 0);
    // A now plays C (its new SSRC restarted the jitter buffer); B is left behind and refused.
    let at_a = drain(&mut sa);
    assert!(mostly_tone(&at_a[at_a.len() - 8000..], 1500.0), "A hears C");
    let b_after = rb.stats().received.load(Ordering::Relaxed);
    assert!(
        b_after - b_before < 10,
        "B stops receiving: {}",
        b_after - b_before
    );
    assert_eq!(ra.stats().outbound_dropped.load(Ordering::Relaxed), 0);
    // DTMF now goes out with the new telephone-event payload type to C.
    ra.send_dtmf("5").await.unwrap();
    let digit = tokio::time::timeout(WAIT, async {
        loop {
            match sc.events.recv().await {
                Some(MediaEvent::Dtmf { digit, .. }) => break digit.to_char(),
                Some(_) => continue,
                None => panic!("C's session ended"),
            }
        }
    });
    let pump = async {
        loop {
            clock.tick().await;
            sa.outbound.push(&[0.0; 320]);
        }
    };
    let digit =
        tokio::select! { d = digit => d.expect("C got the digit"), () = pump => unreachable!() };
    assert_eq!(digit, '5');
    // A codec the media layer does not speak is refused without touching the session.
    let mut opus = negotiated(ca, G711::Pcma, None);
    opus.payload_type = 96;
    assert!(ra.retarget(&opus).await.is_err());
    assert!(ra.is_running());
}

const TIMER: &str = "Supported: timer\r\nSession-Expires: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_interval_below_90_s_is_refused_with_422_and_min_se() {
    let ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut peer = Peer::new(&ep, "short", &format!("{TIMER}60\r\n")).await;
    peer.send_request("INVITE", "short1", PEER_SDP).await;
    let refused = peer.expect_response("422").await;
    assert_eq!(refused.header("Min-SE"), Some("90"));
    peer.send_request("ACK", "short1", "").await;
}

#[tokio::test(start_paused = true)]
async fn hark_as_refresher_re_invites_at_half_the_interval() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let (mut peer, mut call) =
        Peer::call_with(&mut ep, "refresh", &format!("{TIMER}90;refresher=uas\r\n")).await;
    let answered = tokio::time::Instant::now();
    peer.patience = Duration::from_secs(200);
    answer_two_refreshes(&peer, answered).await;
    assert_eq!(call.try_next_event(), None, "refreshes are not events");
    hang_up(&peer, &call.control()).await;
}

/// hark refreshes a 90 s session: re-INVITEs due 45 s and 90 s after `answered`, in the
/// call's dialog, changing nothing; the peer accepts each.
async fn answer_two_refreshes(peer: &Peer, answered: tokio::time::Instant) {
    for n in 1..=2u32 {
        let refresh = peer.expect_request("INVITE").await;
        let at = answered.elapsed().as_secs_f64();
        let due = f64::from(45 * n);
        assert!(
            (due - 1.0..=due + 1.0).contains(&at),
            "refresh {n} at {at:.1} s"
        );
        assert_eq!(refresh.header("Session-Expires"), Some("90;refresher=uac"));
        assert_eq!(
            refresh.to_tag().as_deref(),
            Some("peer"),
            "in the call's dialog"
        );
        assert!(
            sdp_of(&refresh).contains("a=sendrecv"),
            "a refresh changes nothing"
        );
        let ok_sdp = PEER_SDP.replace("o=- 7 1", &format!("o=- 7 {}", n + 1));
        let mut resp = Message::response_to(&refresh, 200, "OK", None);
        resp.push(
            "Contact",
            format!("<sip:peer@{}>", peer.sock.local_addr().unwrap()),
        )
        .push("Require", "timer")
        .push("Session-Expires", "90;refresher=uac")
        .set_body("application/sdp", ok_sdp.into_bytes());
        peer.sock
            .send_to(&resp.to_bytes(), peer.hark)
            .await
            .unwrap();
        peer.expect_request("ACK").await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_refreshing_is_hung_up_before_the_session_expires() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let mut peer = Peer::new(&ep, "expire", &format!("{TIMER}90;refresher=uac\r\n")).await;
    peer.send_request("INVITE", "exp1", PEER_SDP).await;
    let call = tokio::time::timeout(WAIT, ep.accept())
        .await
        .unwrap()
        .unwrap();
    let answering = tokio::spawn(async move {
        let r = call.answer().await;
        (call, r)
    });
    let ok = peer.expect_response("200").await;
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(ok.header("Require"), Some("timer"));
    peer.hark_tag = ok.to_tag().unwrap();
    peer.send_request("ACK", "exp-ack", "").await;
    let (mut call, answered) = answering.await.unwrap();
    answered.unwrap();
    let start = tokio::time::Instant::now();
    peer.patience = Duration::from_secs(200);

    // The caller refreshes once at 40 s, which restarts the 90 s interval...
    tokio::time::sleep(Duration::from_secs(40)).await;
    peer.send_request("INVITE", "exp-refresh", PEER_SDP).await;
    let ok = peer.expect_response("200").await;
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    peer.send_request("ACK", "exp-ack2", "").await;
    // ...then never again: hark sends BYE a third of the interval (30 s) before it ends.
    let bye = peer.expect_request("BYE").await;
    let at = start.elapsed().as_secs_f64();
    assert!(
        (99.0..=101.0).contains(&at),
        "BYE at {at:.1} s, expected 40 + 90 - 30"
    );
    peer.respond(&bye, 200, "OK", None).await;
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::SessionExpired
        })
    );
}

/// A call hark places to a peer, seen from the peer: hark's INVITE has arrived.
struct Dialled {
    peer: Peer,
    invite: Message,
    dialling: tokio::task::JoinHandle<(Endpoint, Result<IncomingCall, DialError>)>,
}

impl Dialled {
    /// An endpoint with `config` dials a fresh peer; returns once its INVITE arrived.
    async fn new(config: &str, name: &str) -> Dialled {
        let ep = Endpoint::start(&direct_config(config)).await.unwrap();
        let mut peer = Peer::new(&ep, name, "").await;
        peer.patience = Duration::from_secs(200);
        let target = format!("sip:{name}@{}", peer.sock.local_addr().unwrap());
        let dialling = tokio::spawn(async move {
            let call = ep.call(&target, Duration::from_secs(30)).await;
            (ep, call)
        });
        let invite = peer.expect_request("INVITE").await;
        Dialled {
            peer,
            invite,
            dialling,
        }
    }

    /// Answers the INVITE with 200, `extra` header lines and SDP; returns hark's ACK, which
    /// must come at once: this peer never resends its 200. (Once, hark sent the ACK only in
    /// reply to a resent 200, half a second late.)
    async fn answer(&self, extra: &[(&str, &str)]) -> Message {
        let mut ok = Message::response_to(&self.invite, 200, "OK", Some("peer"));
        let me = self.peer.sock.local_addr().unwrap();
        ok.push("Contact", format!("<sip:peer@{me}>"));
        for (name, value) in extra {
            ok.push(name, *value);
        }
        ok.set_body("application/sdp", PEER_SDP.as_bytes().to_vec());
        self.peer
            .sock
            .send_to(&ok.to_bytes(), self.peer.hark)
            .await
            .unwrap();
        self.peer.expect_request("ACK").await
    }

    async fn call(self) -> (Peer, Endpoint, IncomingCall) {
        let (ep, call) = self.dialling.await.unwrap();
        (self.peer, ep, call.expect("the call is answered"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_hark_places_asks_for_a_session_timer_and_hark_refreshes_when_the_answer_says_uac() {
    let callee = Dialled::new("session_expires = 90", "uac").await;
    let invite = &callee.invite;
    assert_eq!(invite.header("Session-Expires"), Some("90"));
    assert!(invite
        .header_values("Supported")
        .iter()
        .any(|s| s.contains("timer")));
    assert_eq!(invite.header("Min-SE"), None, "only after a 422");
    callee
        .answer(&[
            ("Require", "timer"),
            ("Session-Expires", "90;refresher=uac"),
        ])
        .await;
    let answered = tokio::time::Instant::now();
    let (peer, _ep, mut call) = callee.call().await;
    answer_two_refreshes(&peer, answered).await;
    assert_eq!(call.try_next_event(), None, "refreshes are not events");
    hang_up(&peer, &call.control()).await;
}

#[tokio::test(start_paused = true)]
async fn a_far_end_that_is_to_refresh_a_call_hark_placed_and_does_not_is_hung_up_before_expiry() {
    let callee = Dialled::new("session_expires = 90", "uas").await;
    callee
        .answer(&[
            ("Require", "timer"),
            ("Session-Expires", "90;refresher=uas"),
        ])
        .await;
    let answered = tokio::time::Instant::now();
    let (peer, _ep, mut call) = callee.call().await;
    let bye = peer.expect_request("BYE").await;
    let at = answered.elapsed().as_secs_f64();
    assert!(
        (59.0..=61.0).contains(&at),
        "BYE at {at:.1} s, expected 90 - 30"
    );
    peer.respond(&bye, 200, "OK", None).await;
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::SessionExpired
        })
    );
}

/// RFC 4028 §7.4: a 422 is acknowledged and the call placed again, asking for its Min-SE. An
/// answer without Session-Expires means the far end keeps no timer, and neither does hark.
#[tokio::test(start_paused = true)]
async fn a_422_has_hark_call_again_with_the_far_ends_minimum_and_an_answer_without_timer_keeps_none(
) {
    let mut callee = Dialled::new("", "short").await;
    assert_eq!(
        callee.invite.header("Session-Expires"),
        Some("1800"),
        "the default interval"
    );
    let mut refused = Message::response_to(
        &callee.invite,
        422,
        "Session Interval Too Small",
        Some("peer"),
    );
    refused.push("Min-SE", "3600");
    let peer = &callee.peer;
    peer.sock
        .send_to(&refused.to_bytes(), peer.hark)
        .await
        .unwrap();
    let ack = peer.expect_request("ACK").await;
    assert_eq!(
        ack.branch(),
        callee.invite.branch(),
        "the 422's ACK is in its transaction"
    );
    let again = peer.expect_request("INVITE").await;
    assert_eq!(cseq(&again), cseq(&callee.invite) + 1);
    assert_eq!(again.call_id(), callee.invite.call_id());
    assert_eq!(again.header("Session-Expires"), Some("3600"));
    assert_eq!(again.header("Min-SE"), Some("3600"));
    callee.invite = again;
    callee.answer(&[]).await;
    let (peer, _ep, call) = callee.call().await;
    let mut buf = vec![0u8; 65536];
    assert!(
        tokio::time::timeout(Duration::from_secs(7200), peer.sock.recv_from(&mut buf))
            .await
            .is_err(),
        "no refresh and no BYE: the call has no timer"
    );
    hang_up(&peer, &call.control()).await;
}

/// RFC 3311: an UPDATE without an offer refreshes the session as a re-INVITE would, and
/// changes nothing else.
#[tokio::test(start_paused = true)]
async fn an_update_without_an_offer_refreshes_the_session_and_changes_nothing() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let timer = format!("{TIMER}90;refresher=uac\r\n");
    let (mut peer, mut call) = Peer::call_with(&mut ep, "update", &timer).await;
    let start = tokio::time::Instant::now();
    peer.patience = Duration::from_secs(200);
    tokio::time::sleep(Duration::from_secs(40)).await;
    peer.send_request("UPDATE", "upd1", "").await;
    let ok = peer.expect_response("200").await;
    assert_eq!(ok.cseq().unwrap().1, "UPDATE");
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    assert!(ok.body.is_empty(), "no offer, no answer");
    assert!(ok.header("Allow").is_some_and(|a| a.contains("UPDATE")));
    // The refresh restarted the interval: BYE comes 90 - 30 s after it, not after the answer.
    let bye = peer.expect_request("BYE").await;
    let at = start.elapsed().as_secs_f64();
    assert!((99.0..=101.0).contains(&at), "BYE at {at:.1} s");
    peer.respond(&bye, 200, "OK", None).await;
    assert_eq!(
        call.next_event_within(WAIT).await,
        Some(CallEvent::Hangup {
            reason: HangupReason::SessionExpired
        }),
        "and no hold or media change before it"
    );
}

/// An UPDATE with an offer moves the media like a re-INVITE; its 200 is sent once (an UPDATE
/// is not acknowledged, so nothing is resent waiting for an ACK).
#[tokio::test(start_paused = true)]
async fn an_update_with_an_offer_holds_the_call_like_a_re_invite_and_is_answered_once() {
    let mut ep = Endpoint::start(&direct_config("")).await.unwrap();
    let (mut peer, mut call) = Peer::call(&mut ep, "update-hold").await;
    let hold = PEER_SDP
        .replace("a=sendrecv", "a=sendonly")
        .replace("o=- 7 1", "o=- 7 2");
    peer.send_request("UPDATE", "upd-hold", &hold).await;
    let ok = peer.expect_response("200").await;
    assert!(sdp_of(&ok).contains("a=recvonly"), "{}", sdp_of(&ok));
    assert_eq!(call.next_event_within(WAIT).await, Some(CallEvent::Hold));
    let mut buf = vec![0u8; 65536];
    assert!(
        tokio::time::timeout(Duration::from_secs(40), peer.sock.recv_from(&mut buf))
            .await
            .is_err(),
        "the 200 to an UPDATE is not resent"
    );
    hang_up(&peer, &call.control()).await;
}

/// After a 422, the INVITE goes again with its digest answer counted up (nc=2): a registrar
/// that checks nonce counts refuses a replayed nc=1 (RFC 7616 §3.4).
#[tokio::test(start_paused = true)]
async fn a_422_after_a_digest_challenge_answers_the_same_nonce_with_the_next_count() {
    let mut callee = Dialled::new("user = \"hark\"\npassword = \"pw\"", "authed").await;
    let peer = &callee.peer;
    let refuse = |invite: &Message, code: u16, reason: &str, header: (&str, &str)| {
        let mut resp = Message::response_to(invite, code, reason, Some("peer"));
        resp.push(header.0, header.1);
        resp.to_bytes()
    };
    let challenge = refuse(
        &callee.invite,
        401,
        "Unauthorized",
        (
            "WWW-Authenticate",
            "Digest realm=\"pbx\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5",
        ),
    );
    peer.sock.send_to(&challenge, peer.hark).await.unwrap();
    peer.expect_request("ACK").await;
    let answered = peer.expect_request("INVITE").await;
    let auth = answered
        .header("Authorization")
        .expect("the challenge is answered");
    assert!(
        auth.contains("nonce=\"n0nce\"") && auth.contains("nc=00000001"),
        "{auth}"
    );
    let too_short = refuse(
        &answered,
        422,
        "Session Interval Too Small",
        ("Min-SE", "3600"),
    );
    peer.sock.send_to(&too_short, peer.hark).await.unwrap();
    peer.expect_request("ACK").await;
    let again = peer.expect_request("INVITE").await;
    let auth = again.header("Authorization").expect("answered again");
    assert!(
        auth.contains("nonce=\"n0nce\"") && auth.contains("nc=00000002"),
        "{auth}"
    );
    assert_eq!(again.header("Session-Expires"), Some("3600"));
    assert_eq!(cseq(&again), cseq(&callee.invite) + 2);
    callee.invite = again;
    callee.answer(&[]).await;
    let (peer, _ep, call) = callee.call().await;
    hang_up(&peer, &call.control()).await;
}
