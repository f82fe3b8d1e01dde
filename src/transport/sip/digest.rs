//! Digest authentication as a client (RFC 2617, RFC 7616, RFC 8760 for SIP): answering a
//! registrar's or proxy's `401`/`407` challenge with `MD5` or `SHA-256`, `qop=auth` with a
//! client nonce and nonce count, or the old no-qop form.
//!
//! The password only ever enters a hash here; nothing in this module formats it.

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

    proptest::proptest! {
        #[test]
        fn arbitrary_challenges_never_panic(s in ".{0,200}") {
            let _ = Challenge::parse(&s);
        }
    }
}
