//! Digest authentication (RFC 2617, RFC 7616, RFC 8760 for SIP), both ways:
//!
//! - as a client ([`Challenge`]): answering a registrar's or proxy's `401`/`407` challenge with
//!   `MD5` or `SHA-256`, `qop=auth` with a client nonce and nonce count, or the old no-qop form;
//! - as a server ([`Guard`]): challenging inbound INVITEs (`[sip] inbound_auth`) and checking
//!   the `Authorization` a caller retries with.
//!
//! The password only ever enters a hash here; nothing in this module formats it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::message::split_list;
use crate::providers::http::ApiKey;

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header is not `Digest ...`.
    #[error("challenge is not a Digest challenge: {0}")]
    NotDigest(String),
    /// A required parameter is missing.
    #[error("challenge lacks {0}")]
    Missing(&'static str),
    /// An algorithm other than MD5 and SHA-256 (and their `-sess` forms).
    #[error("unsupported digest algorithm {0}")]
    Algorithm(String),
    /// A qop list without `auth` (only `auth-int` offered).
    #[error("unsupported qop {0}")]
    Qop(String),
}

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617), the default when a challenge names none.
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

/// A parsed `WWW-Authenticate` or `Proxy-Authenticate` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space; the credentials asked for.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Echoed back unchanged.
    pub opaque: Option<String>,
    /// Hash to use.
    pub algorithm: Algorithm,
    /// `-sess` variant (HA1 includes the nonces).
    pub session: bool,
    /// Whether `qop=auth` is to be used (offered by the server).
    pub qop_auth: bool,
    /// The server says the previous nonce expired but the credentials were right.
    pub stale: bool,
}

impl Challenge {
    /// Parses `Digest realm="...", nonce="...", ...`.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let rest = value
            .trim()
            .strip_prefix("Digest")
            .or_else(|| value.trim().strip_prefix("digest"))
            .filter(|r| r.starts_with(char::is_whitespace))
            .ok_or_else(|| DigestError::NotDigest(value.chars().take(40).collect()))?;
        let mut c = Challenge {
            realm: String::new(),
            nonce: String::new(),
            opaque: None,
            algorithm: Algorithm::Md5,
            session: false,
            qop_auth: false,
            stale: false,
        };
        let (mut realm, mut nonce, mut qop) = (None, None, None);
        for item in split_list(rest) {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => c.opaque = Some(v),
                "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                "qop" => qop = Some(v),
                "algorithm" => {
                    let upper = v.to_ascii_uppercase();
                    let (base, sess) = match upper.strip_suffix("-SESS") {
                        Some(b) => (b.to_owned(), true),
                        None => (upper, false),
                    };
                    c.algorithm = match base.as_str() {
                        "MD5" => Algorithm::Md5,
                        "SHA-256" => Algorithm::Sha256,
                        _ => return Err(DigestError::Algorithm(v)),
                    };
                    c.session = sess;
                }
                _ => {}
            }
        }
        c.realm = realm.ok_or(DigestError::Missing("realm"))?;
        c.nonce = nonce.ok_or(DigestError::Missing("nonce"))?;
        if let Some(q) = qop {
            if !q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) {
                return Err(DigestError::Qop(q));
            }
            c.qop_auth = true;
        }
        Ok(c)
    }

    /// The `Authorization`/`Proxy-Authorization` value answering this challenge for a request
    /// `method uri`, with client nonce `cnonce` and nonce count `nc` (1 for a fresh nonce).
    pub fn answer(
        &self,
        user: &str,
        password: &ApiKey,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let response = self.response(user, password, method, uri, cnonce, nc);
        let algorithm = match (self.algorithm, self.session) {
            (Algorithm::Md5, false) => "MD5",
            (Algorithm::Md5, true) => "MD5-sess",
            (Algorithm::Sha256, false) => "SHA-256",
            (Algorithm::Sha256, true) => "SHA-256-sess",
        };
        let mut out = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={algorithm}",
            self.realm, self.nonce
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque=\"{o}\""));
        }
        out
    }

    /// The `response` value (RFC 7616 §3.4.1).
    pub fn response(
        &self,
        user: &str,
        password: &ApiKey,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let h = |s: &str| self.algorithm.hash(s);
        let mut ha1 = h(&format!("{user}:{}:{}", self.realm, password.expose()));
        if self.session {
            ha1 = h(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = h(&format!("{method}:{uri}"));
        if self.qop_auth {
            h(&format!(
                "{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}",
                self.nonce
            ))
        } else {
            h(&format!("{ha1}:{}:{ha2}", self.nonce))
        }
    }
}

/// How long a nonce hark issued is accepted: long enough for a caller to answer the challenge,
/// short enough that a captured `Authorization` is soon worthless.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(30);
/// Most nonces whose nonce count is tracked at once (entries are only made by callers that
/// proved they know the password, and expire with their nonce).
const MAX_TRACKED_NONCES: usize = 256;

/// A parsed `Authorization` value (RFC 7616 §3.4), the caller's answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Who the caller says it is.
    pub username: String,
    /// The protection space it answers for.
    pub realm: String,
    /// The server nonce it answers.
    pub nonce: String,
    /// The request URI it hashed.
    pub uri: String,
    /// The hex digest.
    pub response: String,
    /// Hash used.
    pub algorithm: Algorithm,
    /// `-sess` variant.
    pub session: bool,
    /// `qop=auth` was used (with `nc` and `cnonce`).
    pub qop_auth: bool,
    /// Nonce count (1 for the first use of a nonce).
    pub nc: u32,
    /// Client nonce.
    pub cnonce: String,
}

impl Credentials {
    /// Parses `Digest username="...", realm="...", ...`.
    pub fn parse(value: &str) -> Result<Credentials, DigestError> {
        let rest = strip_digest(value)?;
        let mut c = Credentials {
            username: String::new(),
            realm: String::new(),
            nonce: String::new(),
            uri: String::new(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            session: false,
            qop_auth: false,
            nc: 0,
            cnonce: String::new(),
        };
        let mut seen = [false; 5];
        for item in split_list(rest) {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "username" => (c.username, seen[0]) = (v, true),
                "realm" => (c.realm, seen[1]) = (v, true),
                "nonce" => (c.nonce, seen[2]) = (v, true),
                "uri" => (c.uri, seen[3]) = (v, true),
                "response" => (c.response, seen[4]) = (v, true),
                "cnonce" => c.cnonce = v,
                "nc" => {
                    c.nc = u32::from_str_radix(&v, 16).map_err(|_| DigestError::Missing("nc"))?
                }
                "qop" => {
                    if !v.eq_ignore_ascii_case("auth") {
                        return Err(DigestError::Qop(v));
                    }
                    c.qop_auth = true;
                }
                "algorithm" => (c.algorithm, c.session) = parse_algorithm(&v)?,
                _ => {}
            }
        }
        for (i, name) in ["username", "realm", "nonce", "uri", "response"]
            .into_iter()
            .enumerate()
        {
            if !seen[i] {
                return Err(DigestError::Missing(name));
            }
        }
        if c.qop_auth && (c.cnonce.is_empty() || c.nc == 0) {
            return Err(DigestError::Missing("cnonce and nc"));
        }
        Ok(c)
    }
}

/// What [`Guard::check`] decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials for a fresh nonce: let the request through.
    Accepted,
    /// No usable answer to a challenge of ours: answer 401 with a new challenge; `stale` when
    /// the caller knew the password but its nonce expired or was used up (RFC 7616 §3.3).
    Challenge {
        /// Send `stale=true`.
        stale: bool,
    },
    /// Credentials that are wrong (user or password): answer 403; the text says why, for the
    /// log (it never contains a secret).
    Refused(&'static str),
}

/// The server side of digest authentication: issues nonces that expire and checks the
/// credentials callers retry with.
///
/// Nonces are stateless (the issue time and a keyed hash of it), so a flood of unauthenticated
/// requests costs no memory; only nonces a caller proved the password with are remembered,
/// to refuse a replayed nonce count.
pub struct Guard {
    realm: String,
    user: String,
    password: ApiKey,
    key: String,
    algorithms: Vec<Algorithm>,
    epoch: Instant,
    lifetime: Duration,
    counter: AtomicU32,
    used: Mutex<HashMap<String, (u32, Instant)>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("realm", &self.realm)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("algorithms", &self.algorithms)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard for `realm` accepting `user` with `password`, challenging with MD5 only (see
    /// [`Guard::with_algorithms`]), nonces valid [`NONCE_LIFETIME`].
    pub fn new(realm: &str, user: &str, password: ApiKey) -> Guard {
        let key = format!("{}{}", super::transport::token(), super::transport::token());
        Guard {
            realm: realm.to_owned(),
            user: user.to_owned(),
            password,
            key,
            algorithms: vec![Algorithm::Md5],
            epoch: Instant::now(),
            lifetime: NONCE_LIFETIME,
            counter: AtomicU32::new(0),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The same guard offering `algorithms`, in order of preference (one challenge each); only
    /// answers with one of them are accepted, so an admin who asks for SHA-256 alone gets no
    /// MD5 downgrade. An empty list keeps MD5.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Guard {
        if !algorithms.is_empty() {
            self.algorithms = algorithms.to_vec();
        }
        self
    }

    /// The same guard with nonces valid for `lifetime` (tests use a short one).
    pub fn with_lifetime(mut self, lifetime: Duration) -> Guard {
        self.lifetime = lifetime;
        self
    }

    /// The realm challenges name.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `WWW-Authenticate` values for a 401, one per algorithm in order of preference
    /// (RFC 8760 §2.4), all with `qop="auth"` and the same new nonce.
    ///
    /// Offering SHA-256 is not free: older phones give up on a 401 that carries any challenge
    /// they cannot compute (baresip 1.0's libre closes the call with "Function not
    /// implemented" even when an MD5 challenge is offered beside it). Hence MD5 alone by
    /// default.
    pub fn challenges(&self, stale: bool) -> Vec<String> {
        let nonce = self.nonce_at(self.epoch.elapsed());
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|a| {
                let algorithm = match a {
                    Algorithm::Md5 => "MD5",
                    Algorithm::Sha256 => "SHA-256",
                };
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={algorithm}, qop=\"auth\"{stale}",
                    self.realm
                )
            })
            .collect()
    }

    fn mac(&self, stamp: &str) -> String {
        hex(&Sha256::digest(
            format!("{}:{stamp}:{}", self.key, self.key).as_bytes(),
        ))[..32]
            .to_owned()
    }

    fn nonce_at(&self, age: Duration) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let stamp = format!("{:012x}{n:08x}", age.as_millis() as u64);
        let mac = self.mac(&stamp);
        format!("{stamp}{mac}")
    }

    /// When a nonce of ours was issued (since `epoch`), or `None` for one we never issued.
    fn issued(&self, nonce: &str) -> Option<Duration> {
        if nonce.len() != 52 || !nonce.is_ascii() {
            return None;
        }
        let (stamp, mac) = nonce.split_at(20);
        if !ct_eq(mac.as_bytes(), self.mac(stamp).as_bytes()) {
            return None;
        }
        u64::from_str_radix(&stamp[..12], 16)
            .ok()
            .map(Duration::from_millis)
    }

    /// Decides on a request `method` carrying the `Authorization` values `authorizations`.
    pub fn check(&self, method: &str, authorizations: &[&str]) -> Verdict {
        // Only an answer for our realm counts; others are for someone else (RFC 3261 §22.4).
        let Some(creds) = authorizations
            .iter()
            .filter_map(|a| Credentials::parse(a).ok())
            .find(|c| c.realm == self.realm)
        else {
            return Verdict::Challenge { stale: false };
        };
        if !creds.qop_auth || creds.session || !self.algorithms.contains(&creds.algorithm) {
            // Not an answer to a challenge of ours: those ask for qop=auth with one of our
            // algorithms (no -sess form, no RFC 2069 answer, no downgrade).
            return Verdict::Challenge { stale: false };
        }
        if creds.username != self.user {
            return Verdict::Refused("unknown user name");
        }
        let challenge = Challenge {
            realm: creds.realm.clone(),
            nonce: creds.nonce.clone(),
            opaque: None,
            algorithm: creds.algorithm,
            session: creds.session,
            qop_auth: true,
            stale: false,
        };
        let expected = challenge.response(
            &self.user,
            &self.password,
            method,
            &creds.uri,
            &creds.cnonce,
            creds.nc,
        );
        if !ct_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Refused("wrong password");
        }
        // The caller knows the password; is the nonce still good?
        let now = self.epoch.elapsed();
        let Some(issued) = self.issued(&creds.nonce) else {
            return Verdict::Challenge { stale: true };
        };
        if now.saturating_sub(issued) > self.lifetime {
            return Verdict::Challenge { stale: true };
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let at = Instant::now();
        used.retain(|_, (_, seen)| at.duration_since(*seen) <= self.lifetime);
        match used.get_mut(&creds.nonce) {
            Some((last, _)) if creds.nc <= *last => return Verdict::Challenge { stale: true },
            Some((last, _)) => *last = creds.nc,
            None => {
                if used.len() >= MAX_TRACKED_NONCES {
                    // Full of live nonces: make room by forgetting the oldest.
                    if let Some(oldest) = used
                        .iter()
                        .min_by_key(|(_, (_, seen))| *seen)
                        .map(|(k, _)| k.clone())
                    {
                        used.remove(&oldest);
                    }
                }
                used.insert(creds.nonce.clone(), (creds.nc, at));
            }
        }
        Verdict::Accepted
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What follows `Digest ` in a challenge or credentials value.
fn strip_digest(value: &str) -> Result<&str, DigestError> {
    let v = value.trim();
    v.get(..6)
        .filter(|p| p.eq_ignore_ascii_case("digest"))
        .map(|_| &v[6..])
        .filter(|r| r.starts_with(char::is_whitespace))
        .ok_or_else(|| DigestError::NotDigest(value.chars().take(40).collect()))
}

/// `MD5`, `SHA-256` and their `-sess` forms, as (hash, session).
fn parse_algorithm(v: &str) -> Result<(Algorithm, bool), DigestError> {
    let upper = v.to_ascii_uppercase();
    let (base, sess) = match upper.strip_suffix("-SESS") {
        Some(b) => (b, true),
        None => (upper.as_str(), false),
    };
    match base {
        "MD5" => Ok((Algorithm::Md5, sess)),
        "SHA-256" => Ok((Algorithm::Sha256, sess)),
        _ => Err(DigestError::Algorithm(v.to_owned())),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1's worked example (HTTP, but the computation is SIP's too).
    fn rfc7616(algorithm: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm={algorithm}, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        ))
        .unwrap()
    }

    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn the_rfc_7616_sha256_example_gives_its_published_response() {
        let c = rfc7616("SHA-256");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let pw = ApiKey::new("Circle of Life");
        assert_eq!(
            c.response("Mufasa", &pw, "GET", "/dir/index.html", CNONCE, 1),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn the_rfc_7616_md5_example_gives_its_published_response() {
        let c = rfc7616("MD5");
        let pw = ApiKey::new("Circle of Life");
        assert_eq!(
            c.response("Mufasa", &pw, "GET", "/dir/index.html", CNONCE, 1),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn the_answer_carries_qop_nc_cnonce_and_opaque_but_never_the_password() {
        let c = rfc7616("MD5");
        let a = c.answer(
            "Mufasa",
            &ApiKey::new("Circle of Life"),
            "REGISTER",
            "sip:example.org",
            "abc",
            2,
        );
        assert!(a.starts_with("Digest username=\"Mufasa\""), "{a}");
        assert!(a.contains("qop=auth, nc=00000002, cnonce=\"abc\""), "{a}");
        assert!(a.contains("opaque=\"FQhe"), "{a}");
        assert!(!a.contains("Circle"), "{a}");
    }

    #[test]
    fn a_challenge_without_qop_uses_the_rfc_2069_form() {
        // RFC 2617 §3.5's example without qop: HA1/HA2 joined by the nonce only.
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert!(!c.qop_auth);
        let pw = ApiKey::new("p");
        let ha1 = Algorithm::Md5.hash("u:r:p");
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:r");
        assert_eq!(
            c.response("u", &pw, "REGISTER", "sip:r", "x", 1),
            Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}"))
        );
    }

    #[test]
    fn unusable_challenges_are_errors() {
        assert!(matches!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest(_))
        ));
        assert_eq!(
            Challenge::parse("Digest realm=\"x\""),
            Err(DigestError::Missing("nonce"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", algorithm=SHA-512"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", qop=\"auth-int\""),
            Err(DigestError::Qop(_))
        ));
    }

    /// A guard's challenge (`which`: its index) answered by hark's own client code.
    fn answered(guard: &Guard, which: usize, password: &str, nc: u32) -> (String, Challenge) {
        let guard_algorithms = guard.challenges(false).len();
        assert!(
            which < guard_algorithms,
            "the guard offers {guard_algorithms}"
        );
        let challenge = Challenge::parse(&guard.challenges(false)[which]).unwrap();
        let auth = challenge.answer(
            "alice",
            &ApiKey::new(password),
            "INVITE",
            "sip:hark@192.0.2.1",
            "cn0nce",
            nc,
        );
        (auth, challenge)
    }

    fn both() -> [Algorithm; 2] {
        [Algorithm::Sha256, Algorithm::Md5]
    }

    #[test]
    fn a_challenge_offers_the_algorithms_in_order_with_qop_auth_and_one_fresh_nonce() {
        let md5_only = Guard::new("hark", "alice", ApiKey::new("s3cret"));
        let only = md5_only.challenges(false);
        assert_eq!(only.len(), 1);
        assert_eq!(
            Challenge::parse(&only[0]).unwrap().algorithm,
            Algorithm::Md5
        );
        let guard = Guard::new("hark", "alice", ApiKey::new("s3cret")).with_algorithms(&both());
        let offered = guard.challenges(false);
        let (a, b) = (
            Challenge::parse(&offered[0]).unwrap(),
            Challenge::parse(&offered[1]).unwrap(),
        );
        assert_eq!(
            (a.algorithm, b.algorithm),
            (Algorithm::Sha256, Algorithm::Md5)
        );
        assert!(a.qop_auth && b.qop_auth && !a.stale);
        assert_eq!(a.nonce, b.nonce);
        assert_eq!(a.realm, "hark");
        let again = Challenge::parse(&guard.challenges(true)[0]).unwrap();
        assert_ne!(again.nonce, a.nonce, "each challenge has its own nonce");
        assert!(again.stale);
    }

    #[test]
    fn the_right_password_is_accepted_with_either_algorithm() {
        let guard = Guard::new("hark", "alice", ApiKey::new("s3cret")).with_algorithms(&both());
        for which in [0, 1] {
            let (auth, _) = answered(&guard, which, "s3cret", 1);
            assert_eq!(guard.check("INVITE", &[&auth]), Verdict::Accepted, "{auth}");
        }
    }

    #[test]
    fn an_algorithm_not_offered_is_not_accepted() {
        let sha_only = Guard::new("hark", "alice", ApiKey::new("s3cret"))
            .with_algorithms(&[Algorithm::Sha256]);
        let (auth, challenge) = answered(&sha_only, 0, "s3cret", 1);
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        let md5 = Challenge {
            algorithm: Algorithm::Md5,
            ..challenge
        }
        .answer(
            "alice",
            &ApiKey::new("s3cret"),
            "INVITE",
            "sip:hark@192.0.2.1",
            "c",
            1,
        );
        assert_eq!(
            sha_only.check("INVITE", &[&md5]),
            Verdict::Challenge { stale: false },
            "no downgrade to MD5"
        );
        assert_eq!(sha_only.check("INVITE", &[&auth]), Verdict::Accepted);
    }

    #[test]
    fn a_wrong_password_or_user_is_refused_and_no_answer_is_challenged() {
        let guard = Guard::new("hark", "alice", ApiKey::new("s3cret"));
        let (auth, _) = answered(&guard, 0, "guess", 1);
        assert_eq!(
            guard.check("INVITE", &[&auth]),
            Verdict::Refused("wrong password")
        );
        let (auth, _) = answered(&guard, 0, "s3cret", 1);
        let mallory = auth.replace("username=\"alice\"", "username=\"mallory\"");
        assert_eq!(
            guard.check("INVITE", &[&mallory]),
            Verdict::Refused("unknown user name")
        );
        // Signed for another method than the request's: the hash does not match.
        assert_eq!(
            guard.check("BYE", &[&auth]),
            Verdict::Refused("wrong password")
        );
        assert_eq!(
            guard.check("INVITE", &[]),
            Verdict::Challenge { stale: false }
        );
        let other_realm = auth.replace("realm=\"hark\"", "realm=\"elsewhere\"");
        assert_eq!(
            guard.check("INVITE", &[&other_realm]),
            Verdict::Challenge { stale: false }
        );
        assert_eq!(
            guard.check("INVITE", &["Digest garbage"]),
            Verdict::Challenge { stale: false }
        );
    }

    #[test]
    fn a_used_nonce_count_is_not_accepted_twice_but_the_next_count_is() {
        let guard = Guard::new("hark", "alice", ApiKey::new("s3cret"));
        let (first, challenge) = answered(&guard, 0, "s3cret", 1);
        assert_eq!(guard.check("INVITE", &[&first]), Verdict::Accepted);
        assert_eq!(
            guard.check("INVITE", &[&first]),
            Verdict::Challenge { stale: true },
            "a replayed Authorization"
        );
        let second = challenge.answer(
            "alice",
            &ApiKey::new("s3cret"),
            "INVITE",
            "sip:hark@192.0.2.1",
            "cn0nce",
            2,
        );
        assert_eq!(guard.check("INVITE", &[&second]), Verdict::Accepted);
    }

    #[test]
    fn an_expired_or_foreign_nonce_with_the_right_password_is_stale() {
        let guard =
            Guard::new("hark", "alice", ApiKey::new("s3cret")).with_lifetime(Duration::ZERO);
        let (auth, _) = answered(&guard, 0, "s3cret", 1);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(
            guard.check("INVITE", &[&auth]),
            Verdict::Challenge { stale: true }
        );
        // A nonce another guard (or hark before a restart) issued.
        let other = Guard::new("hark", "alice", ApiKey::new("s3cret"));
        let (auth, _) = answered(&other, 0, "s3cret", 1);
        let fresh = Guard::new("hark", "alice", ApiKey::new("s3cret"));
        assert_eq!(
            fresh.check("INVITE", &[&auth]),
            Verdict::Challenge { stale: true }
        );
    }

    #[test]
    fn the_guard_never_shows_its_password_or_key() {
        let guard = Guard::new("hark", "alice", ApiKey::new("hunter2-inbound"));
        let shown = format!("{guard:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&guard.key), "{shown}");
        for c in guard.challenges(false) {
            assert!(!c.contains("hunter2"), "{c}");
        }
    }

    #[test]
    fn credentials_parse_every_field_and_name_what_is_missing() {
        let c = Credentials::parse(
            "Digest username=\"bob\", realm=\"r\", nonce=\"n\", uri=\"sip:x@y\", \
             response=\"ab\", algorithm=SHA-256-sess, qop=auth, nc=0000000a, cnonce=\"c\"",
        )
        .unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.uri, "sip:x@y");
        assert_eq!(
            (c.algorithm, c.session, c.nc),
            (Algorithm::Sha256, true, 10)
        );
        assert_eq!(
            Credentials::parse("Digest username=\"bob\", realm=\"r\", nonce=\"n\", uri=\"u\""),
            Err(DigestError::Missing("response"))
        );
        assert!(matches!(
            Credentials::parse("Basic Ym9iOnB3"),
            Err(DigestError::NotDigest(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_credentials_never_panic(s in ".{0,300}") {
            let _ = Credentials::parse(&s);
            let guard = Guard::new("hark", "alice", ApiKey::new("pw"));
            let _ = guard.check("INVITE", &[&s]);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_challenges_never_panic(s in ".{0,200}") {
            let _ = Challenge::parse(&s);
        }
    }
}
