//! `[sip]`: the phone endpoint (SIP signalling over UDP, TCP or TLS, G.711 media).
//!
//! A device either registers with a registrar (a PBX, a SIP trunk, kamailio) and takes the calls
//! it routes, or takes direct calls from the peers `allow` lists; both at once is fine.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::providers::http::ApiKey;

/// Signalling transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// SIP over UDP (RFC 3261 §18), what every phone and PBX speaks.
    #[default]
    Udp,
    /// SIP over TCP (RFC 3261 §18): hark listens on `bind` and opens connections to peers
    /// (the registrar, call targets); its Contact says `;transport=tcp`, so the registrar
    /// reaches it over TCP too. For PBXs and trunks that want TCP, or messages too large for
    /// a datagram.
    Tcp,
    /// SIP over TLS (RFC 3261 §26.2.1), for trunks and PBXs that refuse signalling in the
    /// clear: like `tcp`, with each connection encrypted. hark checks the certificate of every
    /// peer it connects to against `tls_ca` (or the system's roots) and the name it dialled,
    /// and presents `tls_certificate` to peers that connect to it. Media stays plain RTP.
    Tls,
}

impl SipTransport {
    /// The port a peer listens on when its address names none (RFC 3263 §4.2).
    pub fn default_port(self) -> u16 {
        match self {
            SipTransport::Udp | SipTransport::Tcp => 5060,
            SipTransport::Tls => 5061,
        }
    }
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Local address and port for signalling; `0.0.0.0:5060` (`0.0.0.0:5061` over TLS) when
    /// unset.
    pub bind: Option<String>,
    /// The address written into Contact and SDP when `bind` is a wildcard (the address peers
    /// reach this device at); found from the route to the registrar when unset.
    pub public_address: Option<String>,
    /// `udp` (default), `tcp` or `tls`: one transport for all signalling (listening and
    /// sending).
    #[serde(default)]
    pub transport: SipTransport,
    /// Over TLS: a PEM file of the certificate chain hark presents to peers that connect to
    /// it (a registrar delivering calls, a trunk). Without it hark takes calls only over the
    /// connections it opened itself.
    pub tls_certificate: Option<String>,
    /// Over TLS: the PEM private key of `tls_certificate`. Never logged.
    pub tls_key: Option<String>,
    /// Over TLS: a PEM file of the certificate authorities trusted to vouch for the peers
    /// hark connects to (a PBX with its own CA); the system's roots when unset.
    pub tls_ca: Option<String>,
    /// Registrar `host[:port]` or `sip:` URI; none: no registration, direct calls only.
    pub registrar: Option<String>,
    /// The user part of this device's address of record (`sip:user@domain`).
    pub user: Option<String>,
    /// The user name for digest authentication, when it differs from `user`.
    pub auth_user: Option<String>,
    /// Digest password (use `${VAR}`); never logged.
    pub password: Option<ApiKey>,
    /// The domain of the address of record; the registrar's host when unset.
    pub domain: Option<String>,
    /// Registration lifetime asked for, in seconds.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// Calls handled at once; one more is answered 486 Busy Here.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Addresses (`192.0.2.7`) or networks (`192.0.2.0/24`) allowed to send INVITEs; the
    /// registrar always is. Others get 403.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Voice codecs in order of preference (`PCMU`, `PCMA`).
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// First and last local UDP port for RTP.
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: [u16; 2],
    /// Digest-challenge every new INVITE (401, then the caller retries with `Authorization`),
    /// on top of `allow`: a caller must come from an allowed address *and* know the password.
    /// The realm is `domain` (or `hark`). Off by default: a PBX routing calls to its
    /// registered extension does not expect to be challenged.
    #[serde(default)]
    pub inbound_auth: bool,
    /// The user name callers authenticate as; `user` when unset.
    pub inbound_user: Option<String>,
    /// The password callers authenticate with (use `${VAR}`); `password` when unset. Never
    /// logged.
    pub inbound_password: Option<ApiKey>,
    /// Digest algorithms offered to callers, preferred first (`MD5`, `SHA-256`). MD5 alone by
    /// default: older phones (baresip 1.0) give up on a challenge list holding SHA-256.
    #[serde(default = "default_inbound_algorithms")]
    pub inbound_algorithms: Vec<String>,
    /// Seconds between keep-alives (a CRLF datagram) to the registrar over UDP, so that a NAT
    /// in front of hark keeps the mapping its registration made and the registrar's INVITEs
    /// still get through; 0 sends none. Behind a NAT, hark also registers the address the
    /// registrar saw it at (`received`/`rport`, RFC 3581) unless `public_address` is set.
    #[serde(default = "default_keepalive")]
    pub keepalive: u32,
    /// The session interval (RFC 4028) asked for on calls hark places, in seconds: whoever
    /// the answer names refreshes the call within it, so a call whose far end vanished
    /// without a BYE is ended. 0 asks for none. (Calls hark answers follow the caller's.)
    #[serde(default = "default_session_expires")]
    pub session_expires: u32,
}

/// What `inbound_auth` challenges callers for ([`SipConfig::inbound_credentials`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundAuth {
    /// The realm of the challenges: `domain`, or `hark`.
    pub realm: String,
    /// The user name callers must give.
    pub user: String,
    /// Their password.
    pub password: ApiKey,
    /// `MD5` / `SHA-256`, preferred first, upper case.
    pub algorithms: Vec<String>,
}

fn default_expires() -> u32 {
    300
}
fn default_max_sessions() -> u32 {
    1
}
fn default_codecs() -> Vec<String> {
    vec!["PCMU".into(), "PCMA".into()]
}
fn default_rtp_ports() -> [u16; 2] {
    [10000, 20000]
}
fn default_keepalive() -> u32 {
    25
}
fn default_session_expires() -> u32 {
    1800
}
fn default_inbound_algorithms() -> Vec<String> {
    vec!["MD5".into()]
}

/// A rule a `[sip]` section breaks, found after it was read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sip.{key}: {message}")]
pub struct SipIssue {
    /// The offending key below `sip`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn issue(key: &str, message: impl Into<String>) -> SipIssue {
    SipIssue {
        key: key.into(),
        message: message.into(),
    }
}

/// An `allow` entry: one address or a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowNet {
    addr: IpAddr,
    prefix: u8,
}

impl AllowNet {
    /// Parses `192.0.2.7`, `192.0.2.0/24`, `::1` or `fd00::/8`.
    pub fn parse(s: &str) -> Option<AllowNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.trim().parse::<IpAddr>().ok()?,
                Some(p.trim().parse().ok()?),
            ),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(AllowNet { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl SipConfig {
    /// The parsed bind address (checked by [`SipConfig::validate`]), or the default.
    pub fn bind_addr(&self) -> Result<SocketAddr, SipIssue> {
        match &self.bind {
            None => Ok(SocketAddr::from((
                [0, 0, 0, 0],
                self.transport.default_port(),
            ))),
            Some(b) => b
                .parse()
                .map_err(|_| issue("bind", format!("expected ip:port, got {b:?}"))),
        }
    }

    /// The parsed `allow` list (checked by [`SipConfig::validate`]).
    pub fn allow_nets(&self) -> Result<Vec<AllowNet>, SipIssue> {
        self.allow
            .iter()
            .map(|a| {
                AllowNet::parse(a).ok_or_else(|| {
                    issue(
                        "allow",
                        format!("expected an IP address or network like 192.0.2.0/24, got {a:?}"),
                    )
                })
            })
            .collect()
    }

    /// What inbound INVITEs are challenged for, when `inbound_auth` is on (checked by
    /// [`SipConfig::validate`]).
    pub fn inbound_credentials(&self) -> Option<InboundAuth> {
        if !self.inbound_auth {
            return None;
        }
        let user = self.inbound_user.clone().or_else(|| self.user.clone())?;
        let password = self
            .inbound_password
            .clone()
            .or_else(|| self.password.clone())?;
        Some(InboundAuth {
            realm: self.domain.clone().unwrap_or_else(|| "hark".into()),
            user,
            password,
            algorithms: self
                .inbound_algorithms
                .iter()
                .map(|a| a.to_ascii_uppercase())
                .collect(),
        })
    }

    /// The first rule the section breaks.
    pub fn validate(&self) -> Result<(), SipIssue> {
        self.bind_addr()?;
        if let Some(p) = &self.public_address {
            p.parse::<IpAddr>().map_err(|_| {
                issue(
                    "public_address",
                    format!("expected an IP address, got {p:?}"),
                )
            })?;
        }
        if self.transport == SipTransport::Tls {
            match (&self.tls_certificate, &self.tls_key) {
                (Some(_), None) => {
                    return Err(issue("tls_key", "tls_certificate needs its private key"))
                }
                (None, Some(_)) => {
                    return Err(issue("tls_certificate", "tls_key needs its certificate"))
                }
                _ => {}
            }
        } else if let Some(key) = [
            ("tls_certificate", &self.tls_certificate),
            ("tls_key", &self.tls_key),
            ("tls_ca", &self.tls_ca),
        ]
        .iter()
        .find_map(|(k, v)| v.is_some().then_some(*k))
        {
            return Err(issue(
                key,
                "only used with transport = \"tls\" (or remove it)",
            ));
        }
        if self.registrar.is_some() {
            if self.user.as_deref().is_none_or(|u| u.trim().is_empty()) {
                return Err(issue("user", "a registrar needs a user name"));
            }
            if self.password.as_ref().is_none_or(ApiKey::is_empty) {
                return Err(issue(
                    "password",
                    "a registrar needs a password (use \"${VAR}\")",
                ));
            }
        }
        if let Some(r) = &self.registrar {
            let uri = if r.starts_with("sip:") {
                r.clone()
            } else {
                format!("sip:{r}")
            };
            if crate::transport::sip::message::uri_host_port(&uri).is_none() {
                return Err(issue(
                    "registrar",
                    format!("expected host[:port], got {r:?}"),
                ));
            }
        }
        if !(60..=86_400).contains(&self.expires) {
            return Err(issue(
                "expires",
                format!("expected 60 to 86400 seconds, got {}", self.expires),
            ));
        }
        let se = self.session_expires;
        if se != 0 && !(crate::transport::sip::MIN_SE..=86_400).contains(&se) {
            return Err(issue(
                "session_expires",
                format!("expected 0 (none) or 90 to 86400 seconds, got {se}"),
            ));
        }
        if self.keepalive > 3600 {
            return Err(issue(
                "keepalive",
                format!("expected 0 (none) to 3600 seconds, got {}", self.keepalive),
            ));
        }
        if !(1..=64).contains(&self.max_sessions) {
            return Err(issue(
                "max_sessions",
                format!("expected 1 to 64 calls, got {}", self.max_sessions),
            ));
        }
        self.allow_nets()?;
        if self.codecs.is_empty() {
            return Err(issue(
                "codecs",
                "expected at least one of \"PCMU\", \"PCMA\"",
            ));
        }
        if let Some(c) = self
            .codecs
            .iter()
            .find(|c| !["PCMU", "PCMA"].contains(&c.to_ascii_uppercase().as_str()))
        {
            return Err(issue(
                "codecs",
                format!("unknown codec {c:?}; expected \"PCMU\" or \"PCMA\""),
            ));
        }
        let [lo, hi] = self.rtp_ports;
        if lo < 1024 || hi < lo || hi - lo < 1 {
            return Err(issue(
                "rtp_ports",
                format!("expected [low, high] with 1024 <= low < high, got [{lo}, {hi}]"),
            ));
        }
        if self.inbound_auth {
            if self
                .inbound_user
                .as_deref()
                .or(self.user.as_deref())
                .is_none_or(|u| u.trim().is_empty())
            {
                return Err(issue(
                    "inbound_user",
                    "inbound_auth needs a user name (inbound_user, or user)",
                ));
            }
            if self
                .inbound_password
                .as_ref()
                .or(self.password.as_ref())
                .is_none_or(ApiKey::is_empty)
            {
                return Err(issue(
                    "inbound_password",
                    "inbound_auth needs a password (inbound_password, or password; use \"${VAR}\")",
                ));
            }
        }
        let algorithms: Vec<String> = self
            .inbound_algorithms
            .iter()
            .map(|a| a.to_ascii_uppercase())
            .collect();
        if algorithms.is_empty()
            || algorithms.iter().any(|a| a != "MD5" && a != "SHA-256")
            || (algorithms.len() == 2 && algorithms[0] == algorithms[1])
            || algorithms.len() > 2
        {
            return Err(issue(
                "inbound_algorithms",
                format!(
                    "expected \"MD5\" and/or \"SHA-256\", each once, got {:?}",
                    self.inbound_algorithms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SipConfig, String> {
        let c: SipConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_are_udp_5060_300_s_one_call_and_g711() {
        let c = parse("").unwrap();
        assert_eq!(c.bind_addr().unwrap(), "0.0.0.0:5060".parse().unwrap());
        assert_eq!(c.transport, SipTransport::Udp);
        assert_eq!(c.expires, 300);
        assert_eq!(c.max_sessions, 1);
        assert_eq!(c.codecs, ["PCMU", "PCMA"]);
        assert_eq!(c.rtp_ports, [10000, 20000]);
        assert_eq!(c.session_expires, 1800, "RFC 4028's recommended interval");
        assert_eq!(
            c.keepalive, 25,
            "inside the 30 s a NAT may keep an idle UDP mapping"
        );
        assert_eq!(parse("session_expires = 0").unwrap().session_expires, 0);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("bind = \"nowhere\"", "sip.bind"),
            ("registrar = \"pbx.lan\"\npassword = \"x\"", "sip.user"),
            ("registrar = \"pbx.lan\"\nuser = \"hark\"", "sip.password"),
            ("expires = 5", "sip.expires"),
            ("max_sessions = 0", "sip.max_sessions"),
            ("session_expires = 60", "sip.session_expires"),
            ("keepalive = 7200", "sip.keepalive"),
            ("allow = [\"10.0.0.0/99\"]", "sip.allow"),
            ("codecs = [\"opus\"]", "sip.codecs"),
            ("rtp_ports = [20000, 10000]", "sip.rtp_ports"),
            (
                "transport = \"tls\"\ntls_certificate = \"c.pem\"",
                "sip.tls_key",
            ),
            (
                "transport = \"tls\"\ntls_key = \"k.pem\"",
                "sip.tls_certificate",
            ),
            ("tls_ca = \"ca.pem\"", "sip.tls_ca"),
            ("inbound_auth = true\npassword = \"x\"", "sip.inbound_user"),
            (
                "inbound_auth = true\nuser = \"hark\"",
                "sip.inbound_password",
            ),
            (
                "inbound_algorithms = [\"SHA-512\"]",
                "sip.inbound_algorithms",
            ),
            ("inbound_algorithms = []", "sip.inbound_algorithms"),
            (
                "inbound_algorithms = [\"MD5\", \"md5\"]",
                "sip.inbound_algorithms",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(&format!("{key}:")), "{text}: {err}");
        }
    }

    #[test]
    fn a_bad_key_in_a_file_names_the_file_the_line_and_the_key() {
        let text = "[sip]\nuser = \"hark\"\nmax_sessions = 0\n";
        let err = crate::config::Config::parse(text, std::path::Path::new("hark.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("hark.toml:3: sip.max_sessions: expected 1 to 64 calls"),
            "{err}"
        );
        let ok = crate::config::Config::parse(
            "[sip]\nbind = \"127.0.0.1:5070\"\n",
            std::path::Path::new("hark.toml"),
        )
        .unwrap();
        assert_eq!(
            ok.sip.unwrap().bind_addr().unwrap(),
            "127.0.0.1:5070".parse().unwrap()
        );
    }

    /// The shipped example's `[sip]` block, uncommented, is valid and states the defaults.
    #[test]
    fn the_shipped_example_states_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/hark.toml"))
                .unwrap();
        let start = text.find("#[sip]").expect("the example has a [sip] block");
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix('#').unwrap_or(l))
            .filter(|l| !l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("${SIP_PASSWORD}", "example");
        let c: SipConfig = toml::from_str(block.trim_start_matches("[sip]")).unwrap();
        c.validate().unwrap();
        let d: SipConfig = toml::from_str("").unwrap();
        assert_eq!(c.bind_addr(), d.bind_addr());
        assert_eq!(c.transport, d.transport);
        assert_eq!(c.expires, d.expires);
        assert_eq!(c.max_sessions, d.max_sessions);
        assert_eq!(c.codecs, d.codecs);
        assert_eq!(c.rtp_ports, d.rtp_ports);
    }

    #[test]
    fn tls_listens_on_5061_unless_told_and_its_files_come_as_a_pair() {
        assert_eq!(
            parse("transport = \"tcp\"").unwrap().bind_addr().unwrap(),
            "0.0.0.0:5060".parse().unwrap()
        );
        let tls = parse("transport = \"tls\"").unwrap();
        assert_eq!(tls.bind_addr().unwrap(), "0.0.0.0:5061".parse().unwrap());
        assert_eq!(tls.tls_ca, None, "the system's roots");
        let both = "transport = \"tls\"\ntls_certificate = \"c.pem\"\ntls_key = \"k.pem\"";
        assert_eq!(parse(both).unwrap().tls_key.as_deref(), Some("k.pem"));
        assert_eq!(
            parse("tls_key = \"k.pem\"").unwrap_err(),
            "sip.tls_key: only used with transport = \"tls\" (or remove it)"
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let c = parse("registrar = \"pbx.lan\"\nuser = \"hark\"\npassword = \"hunter2-secret\"")
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("ApiKey(***)"), "{shown}");
    }

    #[test]
    fn inbound_credentials_fall_back_to_the_account_and_stay_secret() {
        let c = parse("inbound_auth = true\nuser = \"hark\"\npassword = \"acct-pw\"").unwrap();
        let a = c.inbound_credentials().unwrap();
        assert_eq!(
            (a.realm.as_str(), a.user.as_str(), a.password.expose()),
            ("hark", "hark", "acct-pw")
        );
        assert_eq!(a.algorithms, ["MD5"]);
        let c = parse(
            "inbound_auth = true\nuser = \"hark\"\npassword = \"acct-pw\"\ndomain = \"pbx.lan\"\n\
             inbound_user = \"door\"\ninbound_password = \"door-pw-99\"\n\
             inbound_algorithms = [\"sha-256\", \"MD5\"]",
        )
        .unwrap();
        let a = c.inbound_credentials().unwrap();
        assert_eq!(
            (a.realm.as_str(), a.user.as_str(), a.password.expose()),
            ("pbx.lan", "door", "door-pw-99")
        );
        assert_eq!(a.algorithms, ["SHA-256", "MD5"]);
        assert!(!format!("{c:?}").contains("door-pw-99"));
        let off = parse("user = \"hark\"\npassword = \"acct-pw\"").unwrap();
        assert_eq!(off.inbound_credentials(), None);
    }

    #[test]
    fn allow_entries_match_addresses_and_networks() {
        let net = AllowNet::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.5".parse().unwrap()));
        let one = AllowNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(AllowNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("203.0.113.9".parse().unwrap()));
        assert!(AllowNet::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert_eq!(AllowNet::parse("bogus"), None);
    }
}
