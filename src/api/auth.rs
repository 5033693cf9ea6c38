//! Bearer-token authentication of the Audit trail API (docs/operations.md, the API).
//!
//! One pinned algorithm family: `[api] jwt_algorithms` lists the accepted
//! algorithms and they must all belong to one family (HMAC, RSA or EC), so a
//! token can never pick how it is checked — the classic confusions (an RSA
//! public key used as an HMAC secret, `alg: none`) are impossible. The key
//! file's meaning follows the family: for HMAC it is the shared secret (its
//! bytes, one trailing newline ignored); otherwise a PEM public key, or a
//! JWKS / single JWK (JSON), in which the token's `kid` selects the key.
//!
//! Checks: signature, `exp` (required), `nbf` (when present), `aud` and
//! `iss` when configured (then required), a 30 s leeway for clock skew; then
//! the scope `service:audit-trail` in `scope` (space-separated string) or
//! `scp` (array or string). A bad token is 401; a good token without the
//! scope is 403.
//!
//! jsonwebtoken is lenient where the API contract (docs/operations.md) is strict: a claim it cannot parse
//! (`"nbf": "2999-01-01"`, `"nbf": null`) counts as absent, and it ignores
//! the `crit` header. So the raw header and claims are checked first
//! ([`check_raw`]): `exp` and `nbf`, when present, must be non-negative
//! numbers, and any `crit` header is refused, since this service
//! understands no JWS extension (RFC 7515 §4.1.11).

use std::str::FromStr;

use axum::http::{header, HeaderMap};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::errors::SCOPE;
use super::ApiError;
use crate::config::ApiConfig;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Longest token accepted (a JWT with a few claims is far smaller).
const MAX_TOKEN: usize = 16 * 1024;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("Missing bearer token")]
    Missing,
    /// The token is expired.
    #[error("Token expired")]
    Expired,
    /// The token is not valid yet.
    #[error("Token not yet valid")]
    NotYetValid,
    /// Audience or issuer mismatch.
    #[error("Token not issued for this service")]
    WrongAudience,
    /// Anything else: malformed, bad signature, unknown key, algorithm.
    #[error("Invalid token")]
    Invalid,
    /// A time claim (`exp`, `nbf`) that is not a non-negative number.
    #[error("Token claim {0} is not a number")]
    MalformedClaim(&'static str),
    /// A `crit` header: names extensions this service does not understand.
    #[error("Token has a critical header this service does not understand")]
    UnknownCritical,
    /// Valid token without the scope.
    #[error("Token lacks the scope service:audit-trail")]
    Scope,
}

use crate::config::JwtFamily as Family;

/// A key with what it may verify.
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// Checks bearer tokens.
pub struct Verifier {
    keys: Vec<Key>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Verifier {
    /// Builds the verifier of `[api]`: reads the key file.
    pub fn from_config(api: &ApiConfig) -> Result<Verifier, ApiError> {
        let bytes = std::fs::read(&api.jwt_key_file).map_err(|e| {
            ApiError::Config(format!(
                "api.jwt_key_file {}: {e}",
                api.jwt_key_file.display()
            ))
        })?;
        Verifier::new(
            &api.jwt_algorithms,
            &bytes,
            api.jwt_audience.as_deref(),
            api.jwt_issuer.as_deref(),
        )
        .map_err(|e| match e {
            ApiError::Config(m) => ApiError::Config(format!(
                "api.jwt_key_file {}: {m}",
                api.jwt_key_file.display()
            )),
            other => other,
        })
    }

    /// Builds a verifier from algorithms (one family) and key material.
    pub fn new(
        algorithms: &[Algorithm],
        key: &[u8],
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Verifier, ApiError> {
        let fam = crate::config::check_jwt_algorithms(algorithms)
            .map_err(|why| ApiError::Config(format!("api.jwt_algorithms {why}")))?;
        let Some(&first) = algorithms.first() else {
            return Err(ApiError::Config("api.jwt_algorithms is empty".into()));
        };
        let algs = algorithms.to_vec();
        let keys = load_keys(fam, key)?;
        let mut validation = Validation::new(first);
        validation.algorithms = algs;
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match audience {
            Some(a) => {
                validation.set_audience(&[a]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(i) = issuer {
            validation.set_issuer(&[i]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier { keys, validation })
    }

    /// Checks the request's `Authorization` header; returns the token to
    /// pass on to the Engines.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return Err(AuthError::Missing);
        };
        let v = v.to_str().map_err(|_| AuthError::Invalid)?.trim();
        let (scheme, token) = v.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let token = token.trim();
        self.verify(token)?;
        Ok(token.to_string())
    }

    /// Verifies a token and its scope.
    pub fn verify(&self, token: &str) -> Result<(), AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(AuthError::Invalid);
        }
        check_raw(token)?;
        // `alg: none` and unknown algorithms fail here.
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid);
        }
        let key = self.select(header.kid.as_deref(), header.alg)?;
        let data = decode::<Value>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::InvalidAudience | K::InvalidIssuer => AuthError::WrongAudience,
                K::MissingRequiredClaim(c) if c == "aud" || c == "iss" => AuthError::WrongAudience,
                _ => AuthError::Invalid,
            }
        })?;
        if has_scope(&data.claims) {
            Ok(())
        } else {
            Err(AuthError::Scope)
        }
    }

    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, AuthError> {
        let usable = |k: &&Key| k.alg.is_none_or_eq(alg);
        let found = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(usable)
                .find(|k| k.kid.as_deref() == Some(kid))
                .or_else(|| {
                    // A single key without kid verifies any kid.
                    let mut all = self.keys.iter().filter(usable);
                    match (all.next(), all.next()) {
                        (Some(k), None) if k.kid.is_none() => Some(k),
                        _ => None,
                    }
                }),
            None => {
                let mut all = self.keys.iter().filter(usable);
                match (all.next(), all.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        };
        found.map(|k| &k.key).ok_or(AuthError::Invalid)
    }
}

trait OptAlg {
    fn is_none_or_eq(&self, a: Algorithm) -> bool;
}

impl OptAlg for Option<Algorithm> {
    fn is_none_or_eq(&self, a: Algorithm) -> bool {
        self.map_or(true, |x| x == a)
    }
}

/// Time claims jsonwebtoken would silently skip when malformed.
const TIME_CLAIMS: [&str; 2] = ["exp", "nbf"];

/// Strict checks on the raw header and claims that jsonwebtoken does not
/// make (see the module comment). Run before the signature check: it looks
/// at structure only, and a forged token fails either way.
fn check_raw(token: &str) -> Result<(), AuthError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid);
    };
    let object = |segment: &str| -> Result<serde_json::Map<String, Value>, AuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| AuthError::Invalid)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(AuthError::Invalid),
        }
    };
    if object(header)?.contains_key("crit") {
        return Err(AuthError::UnknownCritical);
    }
    let claims = object(claims)?;
    for name in TIME_CLAIMS {
        match claims.get(name) {
            None => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0) => {}
            Some(_) => return Err(AuthError::MalformedClaim(name)),
        }
    }
    Ok(())
}

/// Whether the claims carry the scope, in `scope` or `scp`.
fn has_scope(claims: &Value) -> bool {
    let in_value = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.split_ascii_whitespace().any(|x| x == SCOPE),
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(SCOPE)),
        _ => false,
    };
    in_value(claims.get("scope")) || in_value(claims.get("scp"))
}

fn load_keys(fam: Family, bytes: &[u8]) -> Result<Vec<Key>, ApiError> {
    let bad = |m: &str| ApiError::Config(m.to_string());
    if fam == Family::Hmac {
        let secret = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(bytes);
        if secret.len() < 32 {
            return Err(bad("HMAC secret shorter than 32 bytes"));
        }
        return Ok(vec![Key {
            kid: None,
            alg: None,
            key: DecodingKey::from_secret(secret),
        }]);
    }
    let trimmed = bytes.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        let v: Value = serde_json::from_slice(trimmed).map_err(|_| bad("invalid JSON (JWKS)"))?;
        let jwks: Vec<Jwk> = if v.get("keys").is_some() {
            serde_json::from_value::<JwkSet>(v)
                .map_err(|_| bad("invalid JWKS"))?
                .keys
        } else {
            vec![serde_json::from_value::<Jwk>(v).map_err(|_| bad("invalid JWK"))?]
        };
        let mut keys = Vec::new();
        for jwk in jwks {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let jfam = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                // Symmetric keys in a JWKS file are not public keys.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            if jfam != fam {
                continue;
            }
            let alg = match jwk.common.key_algorithm {
                Some(ka) => match Algorithm::from_str(&ka.to_string()) {
                    Ok(a) => Some(a),
                    Err(_) => continue,
                },
                None => None,
            };
            let key = DecodingKey::from_jwk(&jwk).map_err(|_| bad("invalid key in JWKS"))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(bad("no usable key for api.jwt_algorithms in JWKS"));
        }
        return Ok(keys);
    }
    let key = match fam {
        Family::Rsa => DecodingKey::from_rsa_pem(bytes),
        Family::Ec => DecodingKey::from_ec_pem(bytes),
        Family::Ed => DecodingKey::from_ed_pem(bytes),
        Family::Hmac => return Err(bad("unreachable")),
    }
    .map_err(|_| bad("not a PEM public key of the api.jwt_algorithms family"))?;
    Ok(vec![Key {
        kid: None,
        alg: None,
        key,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    /// Minimal base64url without padding (the tests mint tokens by hand).
    fn b64url(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-secret";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier(aud: Option<&str>, iss: Option<&str>) -> Verifier {
        Verifier::new(&[Algorithm::HS256], SECRET, aud, iss).unwrap()
    }

    #[test]
    fn scope_and_times() {
        let v = verifier(None, None);
        let ok = json!({"exp": now() + 600, "scope": "openid service:audit-trail"});
        assert_eq!(v.verify(&hs(ok)), Ok(()));
        let scp = json!({"exp": now() + 600, "scp": ["service:audit-trail"]});
        assert_eq!(v.verify(&hs(scp)), Ok(()));
        let wrong = json!({"exp": now() + 600, "scope": "service:audit-trail-x"});
        assert_eq!(v.verify(&hs(wrong)), Err(AuthError::Scope));
        let expired = json!({"exp": now() - 3600, "scope": SCOPE});
        assert_eq!(v.verify(&hs(expired)), Err(AuthError::Expired));
        let future = json!({"exp": now() + 7200, "nbf": now() + 3600, "scope": SCOPE});
        assert_eq!(v.verify(&hs(future)), Err(AuthError::NotYetValid));
        let no_exp = json!({"scope": SCOPE});
        assert_eq!(v.verify(&hs(no_exp)), Err(AuthError::Invalid));
        // A token with an audience is fine when none is configured.
        let aud = json!({"exp": now() + 600, "aud": "x", "scope": SCOPE});
        assert_eq!(v.verify(&hs(aud)), Ok(()));
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let v = verifier(Some("nxaudit"), Some("https://idp"));
        let good =
            json!({"exp": now() + 600, "aud": "nxaudit", "iss": "https://idp", "scope": SCOPE});
        assert_eq!(v.verify(&hs(good)), Ok(()));
        let bad_aud =
            json!({"exp": now() + 600, "aud": "other", "iss": "https://idp", "scope": SCOPE});
        assert_eq!(v.verify(&hs(bad_aud)), Err(AuthError::WrongAudience));
        let no_iss = json!({"exp": now() + 600, "aud": "nxaudit", "scope": SCOPE});
        assert_eq!(v.verify(&hs(no_iss)), Err(AuthError::WrongAudience));
    }

    #[test]
    fn forged_tokens() {
        let v = verifier(None, None);
        let claims = json!({"exp": now() + 600, "scope": SCOPE});
        // Wrong secret.
        let other = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"another secret another secret 123"),
        )
        .unwrap();
        assert_eq!(v.verify(&other), Err(AuthError::Invalid));
        // alg: none.
        let b64 = |s: &str| b64url(s.as_bytes());
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&claims.to_string())
        );
        assert_eq!(v.verify(&none), Err(AuthError::Invalid));
        // HS384 is not in the pinned set.
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(v.verify(&hs384), Err(AuthError::Invalid));
        assert_eq!(v.verify("garbage"), Err(AuthError::Invalid));
    }

    /// An HS256 token with a raw header and raw claims, signed correctly,
    /// so only the strict checks can refuse it.
    fn hs_raw(header: &str, claims: &str) -> String {
        use hmac::Mac as _;
        let signing = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(signing.as_bytes());
        format!("{signing}.{}", b64url(&mac.finalize().into_bytes()))
    }

    #[test]
    fn time_claims_must_be_numbers() {
        let v = verifier(None, None);
        let h = r#"{"alg":"HS256","typ":"JWT"}"#;
        let exp = now() + 600;
        let ok = format!(r#"{{"exp":{exp},"nbf":{},"scope":"{SCOPE}"}}"#, now() - 10);
        assert_eq!(
            v.verify(&hs_raw(h, &ok)),
            Ok(()),
            "the raw minting is sound"
        );
        for (claims, name) in [
            (
                format!(r#"{{"exp":{exp},"nbf":"2999-01-01","scope":"{SCOPE}"}}"#),
                "nbf",
            ),
            (
                format!(
                    r#"{{"exp":{exp},"nbf":"{}","scope":"{SCOPE}"}}"#,
                    now() + 3600
                ),
                "nbf",
            ),
            (
                format!(r#"{{"exp":{exp},"nbf":null,"scope":"{SCOPE}"}}"#),
                "nbf",
            ),
            (
                format!(r#"{{"exp":{exp},"nbf":[1],"scope":"{SCOPE}"}}"#),
                "nbf",
            ),
            (
                format!(r#"{{"exp":{exp},"nbf":-5,"scope":"{SCOPE}"}}"#),
                "nbf",
            ),
            (format!(r#"{{"exp":"{exp}","scope":"{SCOPE}"}}"#), "exp"),
            (format!(r#"{{"exp":null,"scope":"{SCOPE}"}}"#), "exp"),
            (format!(r#"{{"exp":true,"scope":"{SCOPE}"}}"#), "exp"),
        ] {
            assert_eq!(
                v.verify(&hs_raw(h, &claims)),
                Err(AuthError::MalformedClaim(name)),
                "{claims}"
            );
        }
        // A fractional NumericDate is a number (RFC 7519 §2).
        let frac = format!(r#"{{"exp":{exp}.5,"scope":"{SCOPE}"}}"#);
        assert_eq!(v.verify(&hs_raw(h, &frac)), Ok(()));
    }

    #[test]
    fn any_crit_header_is_refused() {
        let v = verifier(None, None);
        let claims = format!(r#"{{"exp":{},"scope":"{SCOPE}"}}"#, now() + 600);
        for h in [
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","crit":"x"}"#,
        ] {
            assert_eq!(
                v.verify(&hs_raw(h, &claims)),
                Err(AuthError::UnknownCritical),
                "{h}"
            );
        }
        // Not JSON objects, or not three segments.
        assert_eq!(v.verify("e30.e30"), Err(AuthError::Invalid));
        assert_eq!(v.verify("WzFd.e30.x"), Err(AuthError::Invalid));
        assert_eq!(v.verify("e30.e30.x.y"), Err(AuthError::Invalid));
    }

    #[test]
    fn headers() {
        let v = verifier(None, None);
        let mut h = HeaderMap::new();
        assert_eq!(v.check_headers(&h), Err(AuthError::Missing));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(v.check_headers(&h), Err(AuthError::Missing));
        let t = hs(json!({"exp": now() + 600, "scope": SCOPE}));
        h.insert(
            header::AUTHORIZATION,
            format!("bearer {t}").parse().unwrap(),
        );
        assert_eq!(v.check_headers(&h), Ok(t));
    }

    #[test]
    fn config_errors() {
        assert!(Verifier::new(&[], SECRET, None, None).is_err());
        assert!(Verifier::new(&[Algorithm::HS256, Algorithm::RS256], SECRET, None, None).is_err());
        assert!(Verifier::new(&[Algorithm::HS256], b"short", None, None).is_err());
        assert!(Verifier::new(&[Algorithm::RS256], b"not a pem", None, None).is_err());
        assert!(Verifier::new(&[Algorithm::ES256], b"{\"keys\":[]}", None, None).is_err());
    }

    #[test]
    fn es256_pem_and_jwks() {
        let kp = rcgen::KeyPair::generate().unwrap();
        let pem = kp.public_key_pem();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let claims = json!({"exp": now() + 600, "scope": SCOPE});
        let mut header = Header::new(Algorithm::ES256);
        let t = encode(&header, &claims, &enc).unwrap();
        let v = Verifier::new(&[Algorithm::ES256], pem.as_bytes(), None, None).unwrap();
        assert_eq!(v.verify(&t), Ok(()));
        // JWKS with kid selection.
        let raw = kp.public_key_raw();
        let b64 = b64url;
        let jwks = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "other", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])},
            {"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}
        ]});
        let v =
            Verifier::new(&[Algorithm::ES256], jwks.to_string().as_bytes(), None, None).unwrap();
        header.kid = Some("k1".into());
        assert_eq!(v.verify(&encode(&header, &claims, &enc).unwrap()), Ok(()));
        header.kid = Some("unknown".into());
        assert_eq!(
            v.verify(&encode(&header, &claims, &enc).unwrap()),
            Err(AuthError::Invalid)
        );
        // An HS256 token signed with the public key's bytes is refused.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(pem.as_bytes()),
        )
        .unwrap();
        let v = Verifier::new(&[Algorithm::ES256], pem.as_bytes(), None, None).unwrap();
        assert_eq!(v.verify(&confused), Err(AuthError::Invalid));
    }
}
