//! hark behind a real NAT: Linux's own masquerading (nftables) in network namespaces the test
//! makes, forgetting an idle UDP mapping after 3 s, between hark and kamailio.
//!
//! ```text
//! kamailio, baresip (198.18.N.1) ── veth ── (198.18.N.2) router (198.19.N.1) ── veth ── hark (198.19.N.2)
//! ```
//!
//! hark's endpoints run on a runtime whose threads all entered hark's namespace, so every
//! socket they open (signalling and RTP) is behind the NAT; kamailio has no route to hark's
//! own address, only to the router's.

mod support;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use hark::transport::sip::{Endpoint, RegistrationState};
use support::sip_peers::{require_peers, Baresip, Kamailio, DOMAIN};
use support::sip_setup::{
    answered_call, blocking, captured_logs, config, first_rtp, hang_up, registered,
};

const WAIT: Duration = Duration::from_secs(10);
/// How long the router keeps an idle UDP mapping.
const MAPPING_TIMEOUT_S: u32 = 3;

/// The two namespaces and the links between them; removed on drop.
struct Nat {
    n: u32,
    router: String,
    hark: String,
}

fn sh(cmd: &str) -> Result<String, String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Nat {
    fn new() -> Nat {
        for tool in ["/usr/sbin/ip", "/usr/sbin/nft", "/usr/sbin/conntrack"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is not installed: run scripts/setup.sh --test"
            );
        }
        let n = 20 + std::process::id() % 200;
        let nat = Nat {
            n,
            router: format!("hark-router{n}"),
            hark: format!("hark-ue{n}"),
        };
        // What a killed run may have left behind.
        let _ = sh(&format!("ip netns del {}", nat.router));
        let _ = sh(&format!("ip netns del {}", nat.hark));
        let (r, h) = (&nat.router, &nat.hark);
        let timeout = MAPPING_TIMEOUT_S;
        for cmd in [
            format!("ip netns add {r}"),
            format!("ip netns add {h}"),
            format!("ip link add hark-wan{n} type veth peer name wan netns {r}"),
            format!("ip addr add 198.18.{n}.1/24 dev hark-wan{n}"),
            format!("ip link set hark-wan{n} up"),
            format!("ip -n {r} link add lan type veth peer name eth netns {h}"),
            format!("ip -n {r} addr add 198.18.{n}.2/24 dev wan"),
            format!("ip -n {r} addr add 198.19.{n}.1/24 dev lan"),
            format!("ip -n {r} link set wan up"),
            format!("ip -n {r} link set lan up"),
            format!("ip -n {r} link set lo up"),
            format!("ip -n {h} addr add 198.19.{n}.2/24 dev eth"),
            format!("ip -n {h} link set eth up"),
            format!("ip -n {h} link set lo up"),
            format!("ip -n {h} route add default via 198.19.{n}.1"),
            format!("ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"),
            format!(
                "echo 'table ip nat {{ chain post {{ type nat hook postrouting priority srcnat; \
                 oifname \"wan\" masquerade; }}; }}' | ip netns exec {r} nft -f -"
            ),
            format!("ip netns exec {r} sysctl -qw net.netfilter.nf_conntrack_udp_timeout={timeout}"),
            format!(
                "ip netns exec {r} sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream={timeout}"
            ),
        ] {
            sh(&cmd).unwrap_or_else(|e| panic!("setting up the NAT: {e}"));
        }
        nat
    }

    /// The registrar's side (an address of this host).
    fn wan(&self) -> IpAddr {
        IpAddr::from([198, 18, self.n as u8, 1])
    }

    /// The router's public address: what the registrar sees hark as.
    fn public(&self) -> IpAddr {
        IpAddr::from([198, 18, self.n as u8, 2])
    }

    /// hark's own address, behind the NAT.
    fn private(&self) -> IpAddr {
        IpAddr::from([198, 19, self.n as u8, 2])
    }

    /// The public ports of the router's UDP mappings towards `to`.
    fn mapped_ports(&self, to: SocketAddr) -> Vec<u16> {
        let out = sh(&format!(
            "ip netns exec {} conntrack -L -p udp --orig-dst {} --dport {} 2>/dev/null",
            self.router,
            to.ip(),
            to.port()
        ))
        .unwrap();
        out.lines()
            .filter_map(|l| {
                // The second dport= is the reply's: the mapping's public port.
                l.split_whitespace()
                    .filter_map(|w| w.strip_prefix("dport="))
                    .nth(1)
                    .and_then(|p| p.parse().ok())
            })
            .collect()
    }

    /// Runs `body` on a runtime whose every thread is in hark's namespace.
    fn behind<F: Future<Output = ()> + Send>(&self, body: F) {
        let ns = self.hark.clone();
        std::thread::scope(|s| {
            let ran = s
                .spawn(move || {
                    enter(&ns);
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .on_thread_start(move || enter(&ns))
                        .build()
                        .unwrap();
                    runtime.block_on(body);
                })
                .join();
            if let Err(panic) = ran {
                std::panic::resume_unwind(panic);
            }
        });
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        // Removing a namespace removes its ends of the links, and so their peers.
        let _ = sh(&format!("ip netns del {}", self.router));
        let _ = sh(&format!("ip netns del {}", self.hark));
    }
}

/// Moves the calling thread into network namespace `ns`: sockets it opens from now on are
/// there.
fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on an open namespace file, for this thread only.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

#[test]
fn behind_a_nat_hark_registers_where_the_registrar_sees_it_and_its_keepalives_keep_calls_coming() {
    require_peers();
    captured_logs();
    let nat = Nat::new();
    let kam = Kamailio::start_on(
        nat.wan(),
        &[
            ("kept", "kept-pass"),
            ("lapsed", "lapsed-pass"),
            ("caller", "caller-pass"),
        ],
    );
    let mut phone = Baresip::start("caller", Some((kam.addr, "caller-pass")));
    phone.wait_log("200 OK (kamailio", WAIT);
    let (public, private) = (nat.public(), nat.private());
    nat.behind(async {
        // Two phones behind the NAT: one sends keep-alives every second, one sends none.
        let endpoint = |user: &str, keepalive: u32, rtp: u16| {
            config(&format!(
                "bind = \"{private}:0\"\nregistrar = \"{}\"\nuser = \"{user}\"\n\
                 password = \"{user}-pass\"\ndomain = \"{DOMAIN}\"\nkeepalive = {keepalive}\n\
                 rtp_ports = [{rtp}, {}]",
                kam.addr,
                rtp + 99
            ))
        };
        let mut kept = Endpoint::start(&endpoint("kept", 1, 24000)).await.unwrap();
        let mut lapsed = Endpoint::start(&endpoint("lapsed", 0, 24200))
            .await
            .unwrap();
        for ep in [&kept, &lapsed] {
            assert!(
                matches!(registered(ep).await, RegistrationState::Registered { .. }),
                "{}",
                kam.log()
            );
            // It took the address the registrar saw (RFC 3581 received/rport) as its own.
            assert_eq!(ep.local_addr().ip(), public);
        }
        let log = kam.log();
        for user in ["kept", "lapsed"] {
            let contacts: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("REQ REGISTER") && l.contains(&format!("contact=<sip:{user}@"))
                })
                .collect();
            assert!(
                contacts
                    .iter()
                    .any(|l| l.contains(&format!("<sip:{user}@{private}:")))
                    && contacts
                        .last()
                        .is_some_and(|l| l.contains(&format!("<sip:{user}@{public}:"))),
                "{user} first registered its own address, then the NAT's: {contacts:#?}"
            );
        }
        // The router forgets the silent phone's mapping; the other's keep-alives keep its.
        let gone_by = Instant::now() + Duration::from_secs(20);
        while nat
            .mapped_ports(kam.addr)
            .contains(&lapsed.local_addr().port())
        {
            assert!(
                Instant::now() < gone_by,
                "the idle mapping was never dropped"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            nat.mapped_ports(kam.addr)
                .contains(&kept.local_addr().port()),
            "the keep-alives kept the mapping"
        );
        // So a call to the silent phone cannot get through the NAT any more ...
        blocking(|| phone.command("dial", &format!("sip:lapsed@{DOMAIN}")));
        blocking(|| phone.wait_event(&["CALL_CLOSED"], Duration::from_secs(15)));
        assert!(
            tokio::time::timeout(Duration::ZERO, lapsed.accept())
                .await
                .is_err(),
            "the INVITE reached the phone without keep-alives"
        );
        // ... and one to the phone that kept its mapping does, with media both ways.
        let mut call = answered_call(&mut kept, &mut phone, &format!("sip:kept@{DOMAIN}")).await;
        assert_eq!(call.media.remote.ip(), nat.wan());
        // Answering opened the router for baresip's media on the port hark advertised, so it
        // comes through before hark has sent any.
        first_rtp(&call).await;
        hang_up(&mut call, &mut phone, true).await;
        kept.shutdown().await;
        lapsed.shutdown().await;
    });
}
