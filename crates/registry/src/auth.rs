//! Authentication material and the `WWW-Authenticate` challenge parser; bearer token responses
//! and their expiry (spec §3.4).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::secret::Secret;

/// Credentials for one registry: username and password, or an identity (OAuth2 refresh) token.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Credentials {
    /// User name (may be empty).
    pub username: String,
    /// Password (may be empty).
    pub password: Secret,
    /// Identity token; when set, bearer tokens are obtained with the refresh-token grant.
    pub identity_token: Option<Secret>,
}

impl Credentials {
    /// Username and password credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            identity_token: None,
        }
    }

    /// Identity-token credentials.
    pub fn identity_token(username: impl Into<String>, token: impl Into<Secret>) -> Credentials {
        Credentials {
            username: username.into(),
            password: Secret::default(),
            identity_token: Some(token.into()),
        }
    }

    /// Whether these carry nothing at all (anonymous).
    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.as_ref().is_none_or(Secret::is_empty)
    }
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Scheme, lowercased (`basic`, `bearer`, ...).
    pub scheme: String,
    /// Parameters, keys lowercased.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parses one `WWW-Authenticate` header value: the leading scheme token, then comma-separated
/// `key=value` parameters (token or quoted string); parsing stops quietly at the first malformed
/// piece. `None` when there is no scheme.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let s = header.trim_start();
    let end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
    let scheme = &s[..end];
    if scheme.is_empty() || !scheme.bytes().all(is_token_byte) {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut rest = s[end..].trim_start();
    loop {
        let key_end = rest
            .find(|c: char| !is_token_byte_char(c))
            .unwrap_or(rest.len());
        if key_end == 0 {
            break;
        }
        let key = rest[..key_end].to_ascii_lowercase();
        rest = rest[key_end..].trim_start();
        let Some(after_eq) = rest.strip_prefix('=') else {
            break;
        };
        rest = after_eq.trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, n)) => out.push(n),
                        None => break,
                    },
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let Some(consumed) = closed else {
                break;
            };
            value = out;
            rest = &quoted[consumed..];
        } else {
            let v_end = rest
                .find(|c: char| !is_token_byte_char(c))
                .unwrap_or(rest.len());
            if v_end == 0 {
                break;
            }
            value = rest[..v_end].to_owned();
            rest = &rest[v_end..];
        }
        params.insert(key, value);
        rest = rest.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => break,
        }
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token_byte_char(c: char) -> bool {
    c.is_ascii() && is_token_byte(c as u8)
}

/// A bearer token and when it stops being usable.
#[derive(Clone, Debug)]
pub struct BearerToken {
    /// The token.
    pub token: Secret,
    /// When it expires (never earlier than 60 s after it was received).
    pub expires_at: Instant,
}

impl BearerToken {
    /// Whether the token is still usable at `now`.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        now <= self.expires_at
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    issued_at: Option<String>,
}

/// The shortest token lifetime assumed, in seconds.
pub const MIN_TOKEN_LIFETIME: u64 = 60;

/// The longest token lifetime believed, in seconds (a year): a larger `expires_in` (up to
/// `i64::MAX` seconds from a hostile token server) would overflow the expiry instant.
pub const MAX_TOKEN_LIFETIME: u64 = 365 * 86_400;

/// Parses a token server's JSON answer. `Err` carries a description quoting the body's start.
pub fn parse_token_response(body: &[u8], received: Instant) -> Result<BearerToken, String> {
    let resp: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        let head = String::from_utf8_lossy(&body[..body.len().min(50)]).into_owned();
        format!("decoding token response {head:?}: {e}")
    })?;
    let token = if !resp.token.is_empty() {
        resp.token
    } else if !resp.access_token.is_empty() {
        resp.access_token
    } else {
        return Err("token response holds neither token nor access_token".to_owned());
    };
    let lifetime = match resp.expires_in {
        Some(s) if s >= MIN_TOKEN_LIFETIME as i64 => (s as u64).min(MAX_TOKEN_LIFETIME),
        _ => MIN_TOKEN_LIFETIME,
    };
    // issued_at shifts the expiry back by the age of the token, when it is in the past.
    let age = resp
        .issued_at
        .as_deref()
        .and_then(parse_rfc3339_seconds)
        .and_then(|issued| SystemTime::now().duration_since(issued).ok())
        .unwrap_or(Duration::ZERO);
    let remaining = Duration::from_secs(lifetime).saturating_sub(age);
    Ok(BearerToken {
        token: Secret::new(token),
        expires_at: received + remaining,
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into a `SystemTime`; `None` when malformed.
fn parse_rfc3339_seconds(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let oh: i64 = o.get(1..3)?.parse().ok()?;
            let om: i64 = o.get(4..6)?.parse().ok()?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (header, expected (scheme, params)).
    type ChallengeCase = (
        &'static str,
        Option<(&'static str, &'static [(&'static str, &'static str)])>,
    );

    #[test]
    fn challenge_table() {
        let cases: [ChallengeCase; 6] = [
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#,
                Some((
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                    ],
                )),
            ),
            (
                r#"Basic realm="Registry Realm""#,
                Some(("basic", &[("realm", "Registry Realm")])),
            ),
            (
                r#"Bearer realm="r",error="insufficient_scope",scope="repository:a/b:pull""#,
                Some((
                    "bearer",
                    &[
                        ("realm", "r"),
                        ("error", "insufficient_scope"),
                        ("scope", "repository:a/b:pull"),
                    ],
                )),
            ),
            (
                r#"BEARER Realm=tok, x="a\"b""#,
                Some(("bearer", &[("realm", "tok"), ("x", "a\"b")])),
            ),
            (r#"Bearer realm="unterminated"#, Some(("bearer", &[]))),
            ("", None),
        ];
        for (input, expected) in cases {
            let got = parse_challenge(input);
            match expected {
                None => assert!(got.is_none(), "{input:?}"),
                Some((scheme, params)) => {
                    let got = got.unwrap();
                    assert_eq!(got.scheme, scheme, "{input:?}");
                    let want: BTreeMap<String, String> = params
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                    assert_eq!(got.params, want, "{input:?}");
                }
            }
        }
    }

    #[test]
    fn token_expiry_has_a_floor() {
        let now = Instant::now();
        let t = parse_token_response(br#"{"token":"abc","expires_in":5}"#, now).unwrap();
        assert_eq!(t.token.expose(), "abc");
        assert_eq!(t.expires_at, now + Duration::from_secs(60));
        let t = parse_token_response(br#"{"access_token":"xyz","expires_in":300}"#, now).unwrap();
        assert_eq!(t.token.expose(), "xyz");
        assert_eq!(t.expires_at, now + Duration::from_secs(300));
        // issued in the past: the remaining lifetime shrinks.
        let t = parse_token_response(
            br#"{"token":"a","expires_in":300,"issued_at":"2000-01-01T00:00:00Z"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.expires_at, now);
        let err = parse_token_response(b"<html>not json</html>", now).unwrap_err();
        assert!(err.contains("<html>not json"), "{err}");
        assert!(parse_token_response(br#"{"expires_in":60}"#, now).is_err());
        // a hostile lifetime is capped instead of overflowing the expiry instant (it panicked)
        let t = parse_token_response(br#"{"token":"a","expires_in":9223372036854775807}"#, now)
            .unwrap();
        assert_eq!(t.expires_at, now + Duration::from_secs(MAX_TOKEN_LIFETIME));
    }

    #[test]
    fn rfc3339() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-01-01T00:00:00Z", Some(946_684_800)),
            ("2000-01-01T01:00:00.123+01:00", Some(946_684_800)),
            ("2000-01-01 00:00:00Z", None),
            ("garbage", None),
        ];
        for (s, want) in cases {
            let got = parse_rfc3339_seconds(s)
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
            assert_eq!(got, want, "{s}");
        }
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials::basic("user", "pa55word");
        let d = format!("{c:?}");
        assert!(d.contains("user") && !d.contains("pa55word"), "{d}");
        let c = Credentials::identity_token("<token>", "refresh-xyz");
        assert!(!format!("{c:?}").contains("refresh-xyz"));
        assert!(Credentials::default().is_empty());
    }
}
