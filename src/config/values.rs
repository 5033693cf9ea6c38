//! Typed configuration values: each is parsed once, when the file is
//! loaded, so a bad value fails `--check-config` with the key's name
//! instead of falling back to a default where it is used.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A file mode (permission bits), written in the file as an octal string
/// such as `"0640"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(u32);

impl FileMode {
    /// A mode from its bits (at most `0o7777`).
    pub const fn new(bits: u32) -> FileMode {
        FileMode(bits & 0o7777)
    }

    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl TryFrom<&str> for FileMode {
    type Error = String;

    fn try_from(s: &str) -> Result<FileMode, String> {
        parse_mode(s)
            .map(FileMode)
            .ok_or_else(|| format!("invalid mode {s:?}: give octal permission bits, e.g. \"0640\""))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FileMode, D::Error> {
        match NumOrText::deserialize(d)? {
            // A TOML integer is decimal unless written `0o640`: ambiguous.
            NumOrText::Num(n) => Err(serde::de::Error::custom(format!(
                "invalid mode {n}: give it as an octal string, e.g. \"0640\""
            ))),
            NumOrText::Text(t) => FileMode::try_from(t.as_str()).map_err(serde::de::Error::custom),
        }
    }
}

/// `[api] role`: which appliance the Audit trail API runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// The Portal: serves its log and federates the Engines.
    Portal,
    /// An Engine: serves its own log.
    Engine,
}

impl fmt::Display for ApiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiRole::Portal => "portal",
            ApiRole::Engine => "engine",
        })
    }
}

/// The key family of a JWT algorithm: `[api] jwt_algorithms` must name one
/// family only, so a token cannot choose how its key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtFamily {
    /// HS256/384/512: a shared secret.
    Hmac,
    /// RS* and PS*: an RSA public key.
    Rsa,
    /// ES256/384: an EC public key.
    Ec,
    /// EdDSA: an Ed25519 public key.
    Ed,
}

impl JwtFamily {
    /// The family of `a`.
    pub fn of(a: Algorithm) -> JwtFamily {
        match a {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => JwtFamily::Hmac,
            Algorithm::ES256 | Algorithm::ES384 => JwtFamily::Ec,
            Algorithm::EdDSA => JwtFamily::Ed,
            _ => JwtFamily::Rsa,
        }
    }
}

/// Checks a list of JWT algorithms: not empty, one family.
pub fn check_jwt_algorithms(algs: &[Algorithm]) -> Result<JwtFamily, String> {
    let Some(first) = algs.first() else {
        return Err("is empty".into());
    };
    let fam = JwtFamily::of(*first);
    if algs.iter().any(|a| JwtFamily::of(*a) != fam) {
        return Err("must all be of one family (HS*, RS*/PS*, ES* or EdDSA)".into());
    }
    Ok(fam)
}

/// `jwt_algorithms`: names (`"RS256"`) parsed into algorithms at load.
pub(super) mod jwt_algorithms {
    use super::*;
    use std::str::FromStr;

    pub fn serialize<S: Serializer>(v: &[Algorithm], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Algorithm>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|a| {
                Algorithm::from_str(a.trim()).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "unknown algorithm {a:?} (HS256, RS256, PS256, ES256, EdDSA, ...)"
                    ))
                })
            })
            .collect()
    }
}

/// Longest host name (RFC 1123 §2.1, DNS).
pub const MAX_HOSTNAME: usize = 253;
/// Longest label of a host name.
pub const MAX_HOSTNAME_LABEL: usize = 63;

/// Checks an RFC 1123 host name: 1–253 bytes of dot-separated labels, each
/// 1–63 letters, digits or `-`, not starting or ending with `-`. Records
/// carry it unquoted before the bracket, so nothing else may appear there.
pub fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HOSTNAME {
        return Err(format!("must be 1-{MAX_HOSTNAME} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_HOSTNAME_LABEL {
            return Err(format!(
                "every dot-separated label must be 1-{MAX_HOSTNAME_LABEL} characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "{c:?} is not allowed (letters, digits, '-' and '.' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'".into());
        }
    }
    Ok(())
}

/// Turns any string into a host name [`check_hostname`] accepts: other
/// characters become `-`, labels are trimmed of `-` and cut to 63 bytes,
/// empty labels dropped, the name cut to 253 bytes at a label boundary;
/// nothing left gives `localhost`. A valid name comes back unchanged.
pub fn sanitize_hostname(raw: &str) -> String {
    let mut labels: Vec<String> = Vec::new();
    for label in raw.split('.') {
        let mapped: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut l = mapped.trim_matches('-').to_string();
        l.truncate(MAX_HOSTNAME_LABEL);
        let l = l.trim_end_matches('-').to_string();
        if !l.is_empty() {
            labels.push(l);
        }
    }
    while labels.iter().map(|l| l.len() + 1).sum::<usize>() > MAX_HOSTNAME + 1 {
        labels.pop();
    }
    if labels.is_empty() {
        return "localhost".into();
    }
    labels.join(".")
}

/// Parses an octal mode string like `"0640"`.
fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// Parses a size: a plain number of bytes, or with a unit (`KiB`, `MiB`,
/// `GiB`, `TiB`, `KB`, `MB`, `GB`, `K`, `M`, `G`, `B`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a duration: `30s`, `5m`, `2h`, `1d`, `1w`, `250ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
    match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

pub(super) mod size {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(n),
            NumOrText::Text(t) => parse_size(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("invalid size {t:?} (e.g. \"64MiB\")"))
            }),
        }
    }
}

pub(super) mod duration {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", v.as_secs()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(Duration::from_secs(n)),
            NumOrText::Text(t) => parse_duration(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("invalid duration {t:?} (e.g. \"30s\", \"1d\")"))
            }),
        }
    }
}
