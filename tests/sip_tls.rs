//! SIP over TLS against real peers: kamailio with its TLS module as registrar and proxy (on the
//! test PKI of `tests/tls`), relaying a baresip call to hark over TLS. hark listens on TLS
//! only, so whatever reaches it came over TLS.

mod support;

use std::time::Duration;

use hark::transport::sip::{Endpoint, RegistrationState};
use support::sip_peers::{require_peers, Baresip, Kamailio, DOMAIN};
use support::sip_setup::{
    answered_call, blocking, captured_logs, config, first_rtp, hang_up, logs_text, registered,
    registered_over,
};

const WAIT: Duration = Duration::from_secs(10);
const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");

/// An endpoint on TLS registering with `kam` as `hark`, trusting the CA in `ca` and
/// presenting the test certificate.
async fn registering(kam: &Kamailio, password: &str, ca: &str) -> Endpoint {
    let ports = 23000 + (std::process::id() % 200) * 40;
    Endpoint::start(&config(&format!(
        "bind = \"127.0.0.1:0\"\ntransport = \"tls\"\nregistrar = \"{}\"\nuser = \"hark\"\n\
         password = \"{password}\"\ndomain = \"{DOMAIN}\"\nexpires = 120\n\
         tls_ca = \"{PKI}/{ca}\"\ntls_certificate = \"{PKI}/peer.pem\"\n\
         tls_key = \"{PKI}/peer.key\"\nrtp_ports = [{ports}, {}]",
        kam.addr,
        ports + 39
    )))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hark_registers_over_tls_and_takes_calls_kamailio_relays_to_it_over_tls() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start_tls(
        &[("hark", "tls-pass-5061"), ("caller", "caller-pass")],
        "MD5",
    );
    let mut ep = registering(&kam, "tls-pass-5061", "ca.pem").await;
    assert_eq!(
        registered(&ep).await,
        RegistrationState::Registered { expires: 120 },
        "{}",
        kam.log()
    );
    registered_over(&kam, &ep, "tls");
    // A phone on UDP calls hark's address of record; kamailio relays to its TLS contact.
    let mut phone = Baresip::start("caller", Some((kam.addr, "caller-pass")));
    blocking(|| phone.wait_log("200 OK (kamailio", WAIT));
    for hark_hangs_up in [false, true] {
        let mut call = answered_call(&mut ep, &mut phone, &format!("sip:hark@{DOMAIN}")).await;
        first_rtp(&call).await;
        hang_up(&mut call, &mut phone, hark_hangs_up).await;
    }
    // hark's BYE went to kamailio over TLS (kamailio record-routed both sides).
    let byes = kam.requests("BYE");
    assert!(
        byes.iter()
            .any(|b| b.contains("proto=tls") && b.contains("via=SIP/2.0/TLS")),
        "hark's BYE: {byes:#?}"
    );
    ep.shutdown().await;
    assert!(
        !logs_text().contains("tls-pass-5061"),
        "the password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_whose_certificate_hark_does_not_trust_never_gets_the_register() {
    require_peers();
    captured_logs();
    let kam = Kamailio::start_tls(&[("hark", "untrusted-pass")], "MD5");
    let ep = registering(&kam, "untrusted-pass", "other-ca.pem").await;
    let state = registered(&ep).await;
    let RegistrationState::Failed(e) = &state else {
        panic!("registered with an untrusted registrar: {state:?}")
    };
    assert!(
        e.to_string().contains("invalid peer certificate"),
        "the reason is given: {e}"
    );
    assert_eq!(kam.requests("REGISTER"), Vec::<String>::new());
    ep.shutdown().await;
}
