//! Registration with a registrar (RFC 3261 §10): REGISTER with digest authentication, refreshed
//! at 80 % of the granted lifetime, retried with a growing backoff after a failure, and removed
//! (Expires: 0) on shutdown. Over TCP the connection the registration went over is watched
//! (and kept alive with pings): when it is lost (a registrar restart, a network change), the
//! registration counts as failed and is made again, after the same backoff, over a new
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::digest::Challenge;
use super::message::{param, uri_host_port_or, uri_of, Message};
use super::transport::{branch, token, TransactionError, T1};
use super::ua::Shared;
use crate::config::SipConfig;
use crate::providers::http::ApiKey;

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// No registrar configured, or not started yet.
    Off,
    /// The registrar accepted the binding for this many seconds.
    Registered {
        /// Granted lifetime in seconds.
        expires: u32,
    },
    /// The last attempt failed; another follows after a backoff.
    Failed(RegisterError),
    /// Removed on shutdown (the registrar confirmed Expires: 0).
    Unregistered,
}

/// Why a REGISTER did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The registrar rejected the credentials (a second challenge after answering one).
    #[error("registrar {registrar} rejected the credentials of {user} ({code}): check sip.user, sip.auth_user and sip.password")]
    AuthRejected {
        /// Registrar address.
        registrar: String,
        /// Authentication user.
        user: String,
        /// 401 or 407.
        code: u16,
    },
    /// A challenge hark cannot answer.
    #[error("registrar {0} sent an unusable challenge: {1}")]
    Challenge(String, String),
    /// Any other final failure response.
    #[error("registrar {registrar} refused REGISTER: {code} {reason}")]
    Refused {
        /// Registrar address.
        registrar: String,
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// No response, or the name does not resolve.
    #[error("registrar unreachable: {0}")]
    Unreachable(String),
    /// The connection the registration went over closed (TCP); it is made again.
    #[error("connection to registrar {0} lost")]
    ConnectionLost(String),
}

/// The registrar and the credentials for it.
pub struct Registrar {
    host: String,
    port: u16,
    domain: String,
    user: String,
    auth_user: String,
    password: ApiKey,
    expires: u32,
}

impl Registrar {
    /// From `[sip]` (validated: registrar parses, user and password are set).
    pub fn from_config(registrar: &str, config: &SipConfig) -> Registrar {
        let uri = if registrar.starts_with("sip:") {
            registrar.to_owned()
        } else {
            format!("sip:{registrar}")
        };
        let default_port = config.transport.default_port();
        let (host, port) =
            uri_host_port_or(&uri, default_port).unwrap_or((registrar.to_owned(), default_port));
        let user = config.user.clone().unwrap_or_default();
        Registrar {
            domain: config.domain.clone().unwrap_or_else(|| host.clone()),
            auth_user: config.auth_user.clone().unwrap_or_else(|| user.clone()),
            user,
            password: config.password.clone().unwrap_or_else(|| ApiKey::new("")),
            expires: config.expires,
            host,
            port,
        }
    }

    /// Host and port, for finding the local address that reaches it.
    pub fn host_port(&self) -> (String, u16) {
        (self.host.clone(), self.port)
    }

    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One registration: the Call-ID and CSeq that stay across refreshes, and the last challenge.
struct Binding {
    call_id: String,
    from_tag: String,
    cseq: u32,
    challenge: Option<(Challenge, bool, u32)>,
    /// Where the last REGISTER went (the connection to watch over TCP).
    dest: Option<SocketAddr>,
}

/// Keeps the device registered until `stop` turns true, then un-registers.
pub async fn run(
    shared: Arc<Shared>,
    reg: Registrar,
    state: watch::Sender<RegistrationState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut binding = Binding {
        call_id: token(),
        from_tag: token()[..16].to_owned(),
        cseq: 0,
        challenge: None,
        dest: None,
    };
    let mut failures = 0u32;
    // Connection losses in a row without a connection that lasted (a registrar that closes
    // every connection must not be re-registered with in a tight loop).
    let mut losses = 0u32;
    loop {
        let (wait, registered) = match register_once(&shared, &reg, &mut binding, reg.expires).await
        {
            Ok(granted) => {
                failures = 0;
                tracing::info!(registrar = %reg.name(), expires = granted, "sip: registered");
                state.send_replace(RegistrationState::Registered { expires: granted });
                (Duration::from_secs(u64::from(granted)) * 4 / 5, true)
            }
            Err(e) => {
                failures += 1;
                let backoff = backoff(failures);
                tracing::warn!(error = %e, retry_in = ?backoff, "sip: registration failed");
                state.send_replace(RegistrationState::Failed(e));
                (backoff, false)
            }
        };
        let since = tokio::time::Instant::now();
        let lost = async {
            match binding.dest {
                Some(to) if registered => shared.socket.connection_lost(to).await,
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        let refresh = tokio::time::sleep(wait);
        tokio::pin!(refresh);
        // Over UDP, a datagram now and then keeps a NAT's mapping (and so the registrar's way
        // to hark) open between refreshes.
        let mut keepalive = match (shared.settings.keepalive, binding.dest) {
            (Some(every), Some(to)) if registered => {
                Some((tokio::time::interval_at(since + every, every), to))
            }
            _ => None,
        };
        let connection_lost = loop {
            let ping = async {
                match &mut keepalive {
                    Some((every, to)) => {
                        every.tick().await;
                        *to
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut refresh => break Some(false),
                () = &mut lost => break Some(true),
                to = ping => shared.socket.send_bytes(b"\r\n\r\n", to).await,
                // (Its guard dropped at once: the ping arm awaits.)
                () = async { let _ = stop.wait_for(|s| *s).await; } => break None,
            }
        };
        let Some(connection_lost) = connection_lost else {
            break; // stopped
        };
        if connection_lost {
            losses = if since.elapsed() > LASTING {
                1
            } else {
                losses + 1
            };
            let backoff = backoff(losses);
            let e = RegisterError::ConnectionLost(reg.name());
            tracing::warn!(error = %e, retry_in = ?backoff, "sip: registration lost; registering again");
            state.send_replace(RegistrationState::Failed(e));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }
    match register_once(&shared, &reg, &mut binding, 0).await {
        Ok(_) => {
            tracing::info!(registrar = %reg.name(), "sip: unregistered");
            state.send_replace(RegistrationState::Unregistered);
        }
        Err(e) => tracing::warn!(error = %e, "sip: un-REGISTER failed"),
    }
}

/// A registration connection that lived this long was not part of a closing loop.
const LASTING: Duration = Duration::from_secs(60);

/// The wait after `failures` failed attempts in a row: 2, 4, 8, ... seconds, at most 60.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.min(6)).min(60))
}

/// Sends REGISTER (answering challenges) and returns the granted lifetime.
async fn register_once(
    shared: &Shared,
    reg: &Registrar,
    b: &mut Binding,
    expires: u32,
) -> Result<u32, RegisterError> {
    let to = tokio::net::lookup_host((reg.host.as_str(), reg.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| RegisterError::Unreachable(format!("cannot resolve {}", reg.name())))?;
    shared.socket.name(to, &reg.host);
    shared.set_registrar_ip(to.ip());
    b.dest = Some(to);
    let mut contact = shared_contact(shared, &reg.user);
    // A contact the registrar could not reach hark at (before a NAT), removed with the next.
    let mut unreachable: Option<String> = None;
    let request_uri = format!("sip:{}", reg.domain);
    let aor = format!("<sip:{}@{}>", reg.user, reg.domain);
    let mut answered_fresh = false;
    let mut expires = expires;
    for _ in 0..4 {
        b.cseq += 1;
        let mut req = Message::request("REGISTER", &request_uri);
        req.push(
            "Via",
            format!(
                "SIP/2.0/UDP {};branch={};rport",
                shared_addr(shared),
                branch()
            ),
        )
        .push("Max-Forwards", "70")
        .push("From", format!("{aor};tag={}", b.from_tag))
        .push("To", aor.clone())
        .push("Call-ID", b.call_id.clone())
        .push("CSeq", format!("{} REGISTER", b.cseq))
        .push("Contact", contact.clone());
        if let Some(old) = &unreachable {
            req.push("Contact", format!("{old};expires=0"));
        }
        req.push("Expires", expires.to_string())
            .push("User-Agent", "hark");
        if let Some((ch, proxy, nc)) = &mut b.challenge {
            *nc += 1;
            let cnonce = &token()[..16];
            let value = ch.answer(
                &reg.auth_user,
                &reg.password,
                "REGISTER",
                &request_uri,
                cnonce,
                *nc,
            );
            req.push(
                if *proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                },
                value,
            );
        }
        let resp = shared
            .socket
            .transact(&req, to, T1 * 64)
            .await
            .map_err(|e| match e {
                TransactionError::Timeout(..) => {
                    RegisterError::Unreachable(format!("{} did not answer", reg.name()))
                }
                TransactionError::Send(_, m) => RegisterError::Unreachable(m),
            })?;
        let code = resp.code().unwrap_or_default();
        match code {
            200..=299 => {
                let learnt = (expires > 0 && unreachable.is_none())
                    .then(|| seen_at(&resp, shared.contact_addr()))
                    .flatten()
                    .and_then(|seen| shared.learn_address(seen).map(|old| (old, seen)));
                let Some((old, seen)) = learnt else {
                    return Ok(granted(&resp, &contact, expires));
                };
                tracing::info!(registrar = %reg.name(), was = %old, now = %seen,
                    "sip: the registrar sees hark at another address (a NAT); registering that one");
                unreachable = Some(std::mem::replace(
                    &mut contact,
                    shared_contact(shared, &reg.user),
                ));
            }
            401 | 407 => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let ch = Challenge::parse(resp.header(header).unwrap_or_default())
                    .map_err(|e| RegisterError::Challenge(reg.name(), e.to_string()))?;
                if answered_fresh && !ch.stale {
                    b.challenge = None;
                    return Err(RegisterError::AuthRejected {
                        registrar: reg.name(),
                        user: reg.auth_user.clone(),
                        code,
                    });
                }
                b.challenge = Some((ch, code == 407, 0));
                answered_fresh = true;
            }
            423 => {
                // Interval Too Brief: ask for the registrar's minimum (RFC 3261 §10.2.8).
                expires = resp
                    .header("Min-Expires")
                    .and_then(|v| v.trim().parse().ok())
                    .filter(|m| *m > expires)
                    .ok_or_else(|| refused(reg, &resp))?;
            }
            _ => return Err(refused(reg, &resp)),
        }
    }
    Err(RegisterError::Refused {
        registrar: reg.name(),
        code: 0,
        reason: "too many challenges".into(),
    })
}

fn refused(reg: &Registrar, resp: &Message) -> RegisterError {
    let reason = match &resp.start {
        super::message::StartLine::Response { reason, .. } => reason.clone(),
        _ => String::new(),
    };
    RegisterError::Refused {
        registrar: reg.name(),
        code: resp.code().unwrap_or_default(),
        reason,
    }
}

/// The lifetime the registrar granted our contact: its `expires` parameter in the 200's
/// Contact list, else the `Expires` header, else what we asked.
fn granted(resp: &Message, contact: &str, asked: u32) -> u32 {
    let ours = uri_of(contact);
    resp.header_values("Contact")
        .iter()
        .find(|c| uri_of(c) == ours)
        .and_then(|c| param(c, "expires"))
        .and_then(|e| e.parse().ok())
        .or_else(|| resp.header("Expires").and_then(|e| e.trim().parse().ok()))
        .unwrap_or(asked)
}

/// Where the registrar saw the request come from (RFC 3581: `received` and `rport` in the
/// top Via of its response), when that is not `ours`.
fn seen_at(resp: &Message, ours: SocketAddr) -> Option<SocketAddr> {
    let via = resp.header_values("Via").into_iter().next()?;
    let ip = param(&via, "received").and_then(|r| r.parse().ok());
    let port = param(&via, "rport").and_then(|p| p.parse().ok());
    let seen = SocketAddr::new(ip.unwrap_or(ours.ip()), port.unwrap_or(ours.port()));
    (seen != ours).then_some(seen)
}

fn shared_addr(shared: &Shared) -> SocketAddr {
    shared.contact_addr()
}

fn shared_contact(shared: &Shared, user: &str) -> String {
    format!(
        "<sip:{user}@{}{}>",
        shared.contact_addr(),
        shared.socket.uri_param()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_granted_lifetime_comes_from_our_contact_first() {
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
            From: <sip:hark@d>;tag=1\r\nTo: <sip:hark@d>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
            Contact: <sip:other@10.0.0.9>;expires=999, <sip:hark@127.0.0.1:5070>;expires=120\r\n\
            Expires: 300\r\n\r\n";
        let resp = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(granted(&resp, "<sip:hark@127.0.0.1:5070>", 600), 120);
        assert_eq!(granted(&resp, "<sip:hark@127.0.0.1:5999>", 600), 300);
    }

    #[test]
    fn the_address_the_registrar_saw_is_taken_from_received_and_rport_when_it_differs() {
        let ours: SocketAddr = "192.168.1.20:5060".parse().unwrap();
        let seen = |via: &str| {
            let text = format!(
                "SIP/2.0 200 OK\r\nVia: {via}\r\nVia: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKo\r\n\
                 From: <sip:hark@d>;tag=1\r\nTo: <sip:hark@d>;tag=2\r\nCall-ID: c\r\n\
                 CSeq: 2 REGISTER\r\n\r\n"
            );
            seen_at(&Message::parse(text.as_bytes()).unwrap(), ours)
        };
        let via = "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKx";
        assert_eq!(
            seen(&format!("{via};rport=41234;received=203.0.113.7")),
            Some("203.0.113.7:41234".parse().unwrap())
        );
        // A NAT that kept the port; one that kept the address.
        assert_eq!(
            seen(&format!("{via};received=203.0.113.7;rport=5060")),
            Some("203.0.113.7:5060".parse().unwrap())
        );
        assert_eq!(
            seen(&format!("{via};rport=41234")),
            Some("192.168.1.20:41234".parse().unwrap())
        );
        // No NAT, or a registrar without RFC 3581 (an empty rport): nothing learnt.
        assert_eq!(seen(&format!("{via};rport=5060")), None);
        assert_eq!(seen(&format!("{via};rport")), None);
        assert_eq!(seen(via), None);
    }

    #[test]
    fn retries_back_off_from_2_s_to_a_60_s_ceiling() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_rejected_password_error_names_the_user_but_not_the_password() {
        let e = RegisterError::AuthRejected {
            registrar: "pbx:5060".into(),
            user: "hark".into(),
            code: 401,
        };
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("hark") && shown.contains("401"), "{shown}");
    }
}
