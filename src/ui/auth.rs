//! Who may see the pages: with an API token set (`NIGHTSHIFT_API_TOKEN`), every page needs it,
//! as HTTP Basic (any user name, the token as password), as a bearer token, or as the cookie
//! that the login form sets (HttpOnly, SameSite=Strict). The cookie and the CSRF token are
//! derived from the token's digest, so neither gives the token away, and changing the token
//! ends every session. Without a token the pages are open, and the one action is off.

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Ui;

pub const COOKIE: &str = "nightshift_session";
/// How long a login lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// The digest a token is compared by, trimmed; `None` for an empty one.
pub fn token_digest(token: &str) -> Option<[u8; 32]> {
    let t = token.trim();
    (!t.is_empty()).then(|| Sha256::digest(t.as_bytes()).into())
}

/// The token of an `Authorization` header value with the `Bearer` scheme, matched without
/// regard to case (RFC 6750 section 2.1, RFC 9110 section 11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A value derived from the token's digest for one purpose.
fn derive(token_sha256: &[u8; 32], purpose: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"nightshift-ui\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(token_sha256);
    hex::encode(h.finalize())
}

fn equal(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(a.ct_eq(&b))
}

/// A request that passed the check.
pub struct Session {
    /// The CSRF token forms carry; `None` when no token is set (the action is off).
    pub csrf: Option<String>,
}

impl Session {
    pub fn csrf_matches(&self, given: &str) -> bool {
        self.csrf.as_deref().is_some_and(|c| equal(c, given))
    }
}

/// A request without the token: the server asks for it (see `super::ask_for_token`).
#[derive(Debug)]
pub struct Unauthorized;

/// The session of a request, or [`Unauthorized`].
pub fn check(ui: &Ui, headers: &HeaderMap) -> Result<Session, Unauthorized> {
    let Some(digest) = &ui.token_sha256 else {
        return Ok(Session { csrf: None });
    };
    let session = Session {
        csrf: Some(derive(digest, "csrf")),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let by_header = authorization.and_then(|v| {
        bearer_token(v)
            .map(str::to_string)
            .or_else(|| basic_password(v))
    });
    if by_header
        .as_deref()
        .and_then(token_digest)
        .is_some_and(|g| bool::from(g.ct_eq(digest)))
    {
        return Ok(session);
    }
    let now = chrono::Utc::now().timestamp();
    let by_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| k == COOKIE && session_valid(digest, v, now));
    if by_cookie {
        return Ok(session);
    }
    Err(Unauthorized)
}

/// The password of an `Authorization: Basic` value.
fn basic_password(value: &str) -> Option<String> {
    let (scheme, encoded) = value.trim_start().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// A session value: when it was issued, and a MAC of that under the token's digest.
fn session_value(digest: &[u8; 32], issued: i64) -> String {
    format!("{issued}.{}", derive(digest, &format!("session:{issued}")))
}

/// Whether a cookie's value is a session issued under this token in the last
/// [`SESSION_SECONDS`].
fn session_valid(digest: &[u8; 32], value: &str, now: i64) -> bool {
    let Some(issued) = value
        .split_once('.')
        .and_then(|(t, _)| t.parse::<i64>().ok())
    else {
        return false;
    };
    let fresh = issued <= now.saturating_add(60)
        && now
            .checked_sub(issued)
            .is_some_and(|age| age < SESSION_SECONDS);
    fresh && equal(value, &session_value(digest, issued))
}

/// The `Set-Cookie` value for a correct token from the login form.
pub fn login(ui: &Ui, token: &str) -> Option<String> {
    let digest = ui.token_sha256.as_ref()?;
    let given = token_digest(token)?;
    bool::from(given.ct_eq(digest)).then(|| {
        format!(
            "{COOKIE}={}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict",
            session_value(digest, chrono::Utc::now().timestamp())
        )
    })
}

/// The `Set-Cookie` value that ends a session.
pub fn logout() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Whether a request names this server by a loopback name (or names none). A server bound
/// to loopback answers only those: a web page from elsewhere whose DNS name is made to point
/// at 127.0.0.1 (DNS rebinding) is refused before it can read a page.
pub fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_for_its_time_under_its_token_only() {
        let d = [7u8; 32];
        let now = 1_800_000_000;
        let v = session_value(&d, now);
        assert!(session_valid(&d, &v, now));
        assert!(session_valid(&d, &v, now + SESSION_SECONDS - 1));
        assert!(!session_valid(&d, &v, now + SESSION_SECONDS), "expired");
        assert!(!session_valid(&[8u8; 32], &v, now), "another token");
        let forged = format!("{}.{}", now + 10, v.split_once('.').unwrap().1);
        assert!(
            !session_valid(&d, &forged, now),
            "the time is under the MAC"
        );
        assert!(!session_valid(&d, "garbage", now));
    }

    #[test]
    fn only_loopback_names_are_local() {
        let h = |host: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, host.parse().unwrap());
            host_is_local(&m)
        };
        for ok in [
            "localhost",
            "localhost:9464",
            "127.0.0.1:9464",
            "[::1]:9464",
            "127.0.0.2",
        ] {
            assert!(h(ok), "{ok}");
        }
        for bad in [
            "evil.example:9464",
            "10.0.0.1",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!h(bad), "{bad}");
        }
    }
}
