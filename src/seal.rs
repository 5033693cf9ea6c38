//! Forward-secure sealing of the audit log, and the check of its seals.
//!
//! The hash chain shows that the middle of the log was not edited, but
//! anyone who can write the log can rewrite it from any point on and
//! recompute the chain. Sealing binds the chain head, at regular moments,
//! to a key that only existed at that moment:
//!
//! - Time is cut into epochs of `interval` seconds from `t0`:
//!   `e = floor((t - t0) / interval)`. Epoch keys form a one-way chain,
//!   `K(0) = seed`, `K(e+1) = SHA-256("nxaudit seal epoch v1" ‖ K(e))`.
//! - Inside an epoch, each seal uses the next sub-key:
//!   `S(e,0) = SHA-256("nxaudit seal sub v1" ‖ K(e))`,
//!   `S(e,j+1) = SHA-256("nxaudit seal sub v1" ‖ S(e,j))`.
//! - A seal (record 60907) carries `epoch`, `sub`, the seq range it covers,
//!   the chain head `head` (the `h` of the record before it) and
//!   `mac = HMAC-SHA-256(S(e,j), message)`; the seal record's own
//!   timestamp lies inside epoch `e`.
//! - The signing key file holds only `K(e+1)` and the next unused `S(e,j)`:
//!   it is replaced (atomically, synced) *before* a seal is published, so
//!   whoever reads it later cannot compute any key already used, and cannot
//!   seal for an earlier time (every seal's timestamp must lie in its
//!   epoch, and earlier epochs' keys are gone).
//! - The verification key is `seed`, `t0` and `interval`, printed once by
//!   `nxaudit seal init` as one string (`nxseal1-<seed hex>-<t0>-<interval>`)
//!   for the operator to keep off the appliance. It derives every key.
//!
//! [`SealChecker`] checks the seals of any ordered stream of records (a
//! local log set, or a replica merged from a collector), with or without
//! the verification key.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::fsutil::{self, Dir};
use crate::record::ParsedRecord;
use crate::slotfile::{self, SlotFile, Wipe};

/// Code of a seal record.
pub const SEAL_CODE: u32 = crate::catalog::appliance::SEALED;
/// Code of the record naming records missing at start-up.
pub const MISSING_CODE: u32 = crate::catalog::appliance::RECORDS_MISSING;
/// Code of the daemon's start record.
pub const START_CODE: u32 = crate::catalog::appliance::DAEMON_STARTED;

const EPOCH_LABEL: &[u8] = b"nxaudit seal epoch v1";
const SUB_LABEL: &[u8] = b"nxaudit seal sub v1";
const KEY_PREFIX: &str = "nxseal1";
const FILE_MAGIC: &str = "nxaudit-seal-key v1";

type Key = [u8; 32];

fn derive(label: &[u8], k: &Key) -> Key {
    let mut d = Sha256::new();
    d.update(label);
    d.update(k);
    d.finalize().into()
}

fn next_epoch(k: &Key) -> Key {
    derive(EPOCH_LABEL, k)
}

fn first_sub(epoch_key: &Key) -> Key {
    derive(SUB_LABEL, epoch_key)
}

fn next_sub(s: &Key) -> Key {
    derive(SUB_LABEL, s)
}

fn mac_hex(sub: &Key, message: &str) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail here.
    match Hmac::<Sha256>::new_from_slice(sub) {
        Ok(mut m) => {
            m.update(message.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn key_from_hex(s: &str) -> Option<Key> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// Errors of sealing keys and seal checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key (file or verification string) is malformed.
    #[error("bad seal key: {0}")]
    BadKey(String),
    /// The key file could not be read or written.
    #[error("seal key file {path}: {why}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// A seal record is malformed.
    #[error("seal at seq {seq}: malformed: {why}")]
    Malformed {
        /// Seq of the seal record.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// A seal's MAC does not check under its epoch's key: the records
    /// before it, or the seal itself, were altered.
    #[error("seal at seq {seq} (epoch {epoch}.{sub}): MAC does not match: the records it seals or the seal were altered")]
    BadMac {
        /// Seq of the seal record.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// Its sub-index.
        sub: u64,
    },
    /// A seal names another chain head than the record before it has.
    #[error("seal at seq {seq}: seals head {named}, the record before it has h={actual}")]
    HeadMismatch {
        /// Seq of the seal record.
        seq: u64,
        /// `head=` of the seal.
        named: String,
        /// `h` of the record before it.
        actual: String,
    },
    /// A seal is missing between two seals, or seals are out of order.
    #[error("seal at seq {seq} (epoch {epoch}.{sub}): {why}")]
    Missing {
        /// Seq of the seal record.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// Its sub-index.
        sub: u64,
        /// What is missing.
        why: String,
    },
    /// A seal's time lies outside its epoch's window.
    #[error("seal at seq {seq} (epoch {epoch}): time {ts} is outside the epoch ({from} .. {to})")]
    OutOfWindow {
        /// Seq of the seal record.
        seq: u64,
        /// Its epoch.
        epoch: u64,
        /// Its time.
        ts: String,
        /// Start of the epoch.
        from: String,
        /// End of the epoch.
        to: String,
    },
}

/// The verification key: derives every epoch's key. Printable as one
/// string; kept by the operator, off the appliance.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey {
    seed: Key,
    /// Start of epoch 0, Unix seconds.
    pub t0: i64,
    /// Epoch length, seconds.
    pub interval: u64,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is a secret: never in logs or panics.
        write!(f, "VerifyKey(t0={}, interval={})", self.t0, self.interval)
    }
}

impl std::fmt::Display for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{KEY_PREFIX}-{}-{}-{}",
            hex::encode(self.seed),
            self.t0,
            self.interval
        )
    }
}

impl std::str::FromStr for VerifyKey {
    type Err = SealError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| SealError::BadKey(why.to_string());
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, seed, t0, interval] = parts[..] else {
            return Err(bad("expected nxseal1-<seed>-<t0>-<interval>"));
        };
        if prefix != KEY_PREFIX {
            return Err(bad("unknown key version"));
        }
        let seed = key_from_hex(seed).ok_or_else(|| bad("the seed is not 64 hex digits"))?;
        let t0 = t0.parse().map_err(|_| bad("bad start time"))?;
        let interval: u64 = interval.parse().map_err(|_| bad("bad interval"))?;
        if interval == 0 {
            return Err(bad("interval 0"));
        }
        Ok(VerifyKey { seed, t0, interval })
    }
}

impl VerifyKey {
    /// Start of epoch `e`.
    pub fn epoch_start(&self, e: u64) -> DateTime<Utc> {
        epoch_start(self.t0, self.interval, e)
    }
}

fn epoch_start(t0: i64, interval: u64, e: u64) -> DateTime<Utc> {
    let secs = (e as i128) * (interval as i128) + t0 as i128;
    let secs = secs.clamp(i64::MIN as i128 / 2, i64::MAX as i128 / 2) as i64;
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The epoch `ts` falls in (0 before `t0`).
fn epoch_of(t0: i64, interval: u64, ts: DateTime<Utc>) -> u64 {
    let d = ts.timestamp() - t0;
    if d < 0 {
        0
    } else {
        d as u64 / interval.max(1)
    }
}

/// The text a seal's MAC is computed over.
fn seal_message(f: &SealFields) -> String {
    format!(
        "nxaudit-seal-v1|{}|{}|{}|{}|{}|{}|{}",
        f.epoch, f.sub, f.first, f.last, f.head, f.lost, f.reason
    )
}

/// The fields of a 60907 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealFields {
    /// Time epoch of the key.
    pub epoch: u64,
    /// Seal index within the epoch.
    pub sub: u64,
    /// First seq covered (the one after the previous seal).
    pub first: u64,
    /// Last seq covered (the record just before the seal).
    pub last: u64,
    /// `h` of `last`: the chain head sealed.
    pub head: String,
    /// Seals lost since the previous one (a failed write).
    pub lost: u64,
    /// `interval`, `rotation` or `shutdown`.
    pub reason: String,
    /// HMAC-SHA-256 of the seal message, hex.
    pub mac: String,
}

impl SealFields {
    /// Reads the fields of a parsed 60907 record.
    pub fn of(rec: &ParsedRecord) -> Result<SealFields, SealError> {
        let bad = |why: String| SealError::Malformed { seq: rec.seq, why };
        let num = |k: &str| -> Result<u64, SealError> {
            rec.field(k)
                .ok_or_else(|| bad(format!("no {k}")))?
                .parse()
                .map_err(|_| bad(format!("bad {k}")))
        };
        let text = |k: &str| -> Result<String, SealError> {
            rec.field(k)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no {k}")))
        };
        Ok(SealFields {
            epoch: num("epoch")?,
            sub: num("sub")?,
            first: num("first")?,
            last: num("last")?,
            head: text("head")?,
            lost: rec.field("lost").map_or(Ok(0), |_| num("lost"))?,
            reason: text("reason")?,
            mac: text("mac")?,
        })
    }

    /// The `key="value"` fields to write, in order.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("epoch", self.epoch.to_string()),
            ("sub", self.sub.to_string()),
            ("first", self.first.to_string()),
            ("last", self.last.to_string()),
            ("head", self.head.clone()),
        ];
        if self.lost > 0 {
            v.push(("lost", self.lost.to_string()));
        }
        v.push(("reason", self.reason.clone()));
        v.push(("mac", self.mac.clone()));
        v
    }
}

/// The signing side: the key file the daemon evolves. Holds the next
/// epoch's key and the next unused sub-key of the current epoch, never a
/// key already used.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey {
    t0: i64,
    interval: u64,
    epoch: u64,
    sub: u64,
    next_epoch_key: Key,
    sub_key: Key,
    /// First seq the next seal covers (0: not known yet).
    next_first: u64,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealKey(t0={}, interval={}, epoch={}, sub={})",
            self.t0, self.interval, self.epoch, self.sub
        )
    }
}

/// What one seal needs from the writer.
#[derive(Debug, Clone)]
pub struct SealRequest<'a> {
    /// Timestamp the seal record will carry.
    pub ts: DateTime<Utc>,
    /// Seq the seal record will get.
    pub seq: u64,
    /// `h` of the record before it.
    pub head: &'a str,
    /// Why it is sealed now.
    pub reason: &'a str,
    /// Seals lost since the last one written.
    pub lost: u64,
}

impl SealKey {
    /// A fresh key starting now, with its verification key.
    pub fn generate(now: DateTime<Utc>, interval: u64) -> Result<(SealKey, VerifyKey), SealError> {
        let mut seed = [0u8; 32];
        rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| SealError::BadKey(format!("no random bytes: {e}")))?;
        let interval = interval.max(1);
        let vk = VerifyKey {
            seed,
            t0: now.timestamp(),
            interval,
        };
        Ok((SealKey::from_verify_key(&vk), vk))
    }

    /// The signing key at epoch 0, sub 0 of `vk` (tests, and `seal init`).
    pub fn from_verify_key(vk: &VerifyKey) -> SealKey {
        SealKey {
            t0: vk.t0,
            interval: vk.interval,
            epoch: 0,
            sub: 0,
            next_epoch_key: next_epoch(&vk.seed),
            sub_key: first_sub(&vk.seed),
            next_first: 0,
        }
    }

    /// Epoch length in seconds.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Current epoch of the key.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch `ts` falls in.
    pub fn epoch_of(&self, ts: DateTime<Utc>) -> u64 {
        epoch_of(self.t0, self.interval, ts)
    }

    /// Start of epoch `e`.
    pub fn epoch_start(&self, e: u64) -> DateTime<Utc> {
        epoch_start(self.t0, self.interval, e)
    }

    /// Moves the key forward to epoch `e` (never back), forgetting every
    /// key in between.
    fn advance_to(&mut self, e: u64) {
        if e <= self.epoch {
            return;
        }
        let mut k = self.next_epoch_key;
        for _ in self.epoch + 1..e {
            k = next_epoch(&k);
        }
        self.sub_key = first_sub(&k);
        self.next_epoch_key = next_epoch(&k);
        self.epoch = e;
        self.sub = 0;
    }

    /// Makes the fields of the next seal and evolves the key past the
    /// sub-key it used. `req.ts` must lie in the epoch returned (the caller
    /// pins the record's time to it; see [`SealKey::seal_time`]).
    pub fn seal(&mut self, req: &SealRequest<'_>) -> SealFields {
        self.advance_to(self.epoch_of(req.ts));
        let mut f = SealFields {
            epoch: self.epoch,
            sub: self.sub,
            first: if self.next_first == 0 {
                1
            } else {
                self.next_first
            },
            last: req.seq.saturating_sub(1),
            head: req.head.to_string(),
            lost: req.lost,
            reason: req.reason.to_string(),
            mac: String::new(),
        };
        f.mac = mac_hex(&self.sub_key, &seal_message(&f));
        self.sub_key = next_sub(&self.sub_key);
        self.sub += 1;
        self.next_first = req.seq + 1;
        f
    }

    /// The time a seal made at `now` carries: `now`, unless the clock went
    /// back before the key's current epoch, then that epoch's start.
    pub fn seal_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.max(self.epoch_start(self.epoch))
    }

    /// Encodes the key file.
    pub fn to_file_text(&self) -> String {
        format!(
            "{FILE_MAGIC}\nt0={}\ninterval={}\nepoch={}\nsub={}\nnext_epoch_key={}\nsub_key={}\nnext_first={}\n",
            self.t0,
            self.interval,
            self.epoch,
            self.sub,
            hex::encode(self.next_epoch_key),
            hex::encode(self.sub_key),
            self.next_first
        )
    }

    /// Decodes the key file.
    pub fn from_file_text(text: &str) -> Result<SealKey, SealError> {
        let bad = |why: &str| SealError::BadKey(why.to_string());
        let mut lines = text.lines();
        if lines.next() != Some(FILE_MAGIC) {
            return Err(bad("not a seal key file"));
        }
        let mut get = std::collections::HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once('=') {
                get.insert(k.trim(), v.trim());
            }
        }
        let field = |k: &str| get.get(k).copied().ok_or_else(|| bad(&format!("no {k}")));
        let num = |k: &str| -> Result<u64, SealError> {
            field(k)?.parse().map_err(|_| bad(&format!("bad {k}")))
        };
        let key = |k: &str| key_from_hex(field(k)?).ok_or_else(|| bad(&format!("bad {k}")));
        let interval = num("interval")?;
        if interval == 0 {
            return Err(bad("interval 0"));
        }
        Ok(SealKey {
            t0: field("t0")?.parse().map_err(|_| bad("bad t0"))?,
            interval,
            epoch: num("epoch")?,
            sub: num("sub")?,
            next_epoch_key: key("next_epoch_key")?,
            sub_key: key("sub_key")?,
            next_first: num("next_first")?,
        })
    }

    /// Reads the key file at `path` (never through a link).
    pub fn load(path: &Path) -> Result<SealKey, SealError> {
        let kf = |why: String| SealError::KeyFile {
            path: path.to_path_buf(),
            why,
        };
        let bytes = fsutil::read_file(path)
            .map_err(|e| kf(e.to_string()))?
            .ok_or_else(|| kf("does not exist (create it with `nxaudit seal init`)".into()))?;
        SealKey::from_newest(slotfile::parse(&bytes)).map_err(|e| kf(e.to_string()))
    }

    /// Decodes a key file's newest slot, as [`slotfile`] found it.
    fn from_newest(newest: Option<slotfile::Newest>) -> Result<SealKey, SealError> {
        let newest = newest.ok_or_else(|| SealError::BadKey("no whole key in the file".into()))?;
        let text =
            String::from_utf8(newest.payload).map_err(|_| SealError::BadKey("not UTF-8".into()))?;
        SealKey::from_file_text(&text)
    }
}

/// The key file of a running writer: rewritten in place at every seal
/// (see [`crate::slotfile`]): the new key goes into the other slot and is
/// synced, then the used key is overwritten with zeros and synced, so it
/// is neither readable nor left behind in a freed block.
pub struct KeyFile {
    file: SlotFile,
    path: PathBuf,
}

fn key_file_err(path: &Path) -> impl Fn(String) -> SealError + '_ {
    move |why| SealError::KeyFile {
        path: path.to_path_buf(),
        why,
    }
}

/// The directory and name of a key file path.
fn key_dir(path: &Path) -> Result<(Dir, String), SealError> {
    let kf = key_file_err(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| kf("no file name".into()))?
        .to_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = Dir::open(parent).map_err(|e| kf(e.to_string()))?;
    Ok((dir, name))
}

impl KeyFile {
    /// Whether something (a link included) exists at `path`.
    pub fn exists(path: &Path) -> Result<bool, SealError> {
        let (dir, name) = key_dir(path)?;
        dir.entry(&name)
            .map(|m| m.is_some())
            .map_err(|e| key_file_err(path)(e.to_string()))
    }

    /// Creates the key file at `path` exclusively (mode 0600, never through
    /// a link) holding `key`, synced with its directory.
    pub fn create(path: &Path, key: &SealKey) -> Result<KeyFile, SealError> {
        let (dir, name) = key_dir(path)?;
        let file = SlotFile::create(&dir, &name, 0o600, key.to_file_text().as_bytes())
            .map_err(|e| key_file_err(path)(e.to_string()))?;
        Ok(KeyFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Opens the existing key file at `path` (never through a link) and
    /// reads its key.
    pub fn open(path: &Path) -> Result<(KeyFile, SealKey), SealError> {
        let kf = key_file_err(path);
        let (dir, name) = key_dir(path)?;
        let (file, newest) = match SlotFile::open(&dir, &name, None) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => {
                return Err(kf(
                    "does not exist (create it with `nxaudit seal init`)".into()
                ))
            }
            Err(e) => return Err(kf(e.to_string())),
        };
        let key = SealKey::from_newest(newest).map_err(|e| kf(e.to_string()))?;
        Ok((
            KeyFile {
                file,
                path: path.to_path_buf(),
            },
            key,
        ))
    }

    /// Writes `key` in place of the previous one, which is wiped; returns
    /// once both are on disk.
    pub fn store(&mut self, key: &SealKey) -> Result<(), SealError> {
        self.file
            .write(key.to_file_text().as_bytes(), Wipe::Zero)
            .map_err(|e| key_file_err(&self.path)(e.to_string()))
    }
}

/// What the seals of a record stream show.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SealReport {
    /// Seal records seen.
    pub seals: u64,
    /// Whether their MACs were checked (a verification key was given).
    pub checked: bool,
    /// The first seal seen: (seq, epoch, sub).
    pub first: Option<SealPoint>,
    /// The last seal seen.
    pub last: Option<SealPoint>,
    /// Records after the last seal (not sealed yet).
    pub unsealed_records: u64,
    /// Seal gaps explained by a restart (a seal lost in a crash).
    pub gaps_at_restart: u64,
}

/// One seal's position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SealPoint {
    /// Seq of the seal record.
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its sub-index.
    pub sub: u64,
    /// Its time.
    pub ts: DateTime<Utc>,
    /// Why it was written.
    pub reason: String,
}

impl SealReport {
    /// How long the log has been unsealed at `now`: since the last seal,
    /// or `None` when there is no seal at all. Zero when nothing follows
    /// the last seal (a clean stop).
    pub fn unsealed_for(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        if self.unsealed_records == 0 && self.last.is_some() {
            return Some(chrono::Duration::zero());
        }
        self.since_last_seal(now)
    }

    /// Time from the last seal to `now`, whatever follows it: a running
    /// daemon seals every interval even when idle, so for a live log this
    /// is what must stay short.
    pub fn since_last_seal(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let last = self.last.as_ref()?;
        Some((now - last.ts).max(chrono::Duration::zero()))
    }
}

/// Checks the seals of an ordered record stream, one record at a time.
/// Only seals (60907) and start records (60901) matter; other records
/// only count as unsealed until the next seal.
pub struct SealChecker<'k> {
    key: Option<&'k VerifyKey>,
    /// Derived keys: (epoch, K(epoch)) and (sub, S(epoch, sub)).
    epoch_key: Option<(u64, Key)>,
    sub_key: Option<(u64, Key)>,
    prev: Option<(u64, SealFields)>,
    restarted: bool,
    report: SealReport,
}

impl<'k> SealChecker<'k> {
    /// A checker; with `key`, MACs and time windows are checked too.
    pub fn new(key: Option<&'k VerifyKey>) -> SealChecker<'k> {
        SealChecker {
            key,
            epoch_key: None,
            sub_key: None,
            prev: None,
            restarted: false,
            report: SealReport {
                checked: key.is_some(),
                ..Default::default()
            },
        }
    }

    /// The sub-key S(e, j), derived forward from what was derived last.
    fn sub_key(&mut self, vk: &VerifyKey, e: u64, j: u64) -> Key {
        let (mut ke, mut k) = match self.epoch_key {
            Some((ke, k)) if ke <= e => (ke, k),
            _ => (0, vk.seed),
        };
        let same_epoch = ke == e;
        while ke < e {
            k = next_epoch(&k);
            ke += 1;
        }
        self.epoch_key = Some((e, k));
        let (mut sj, mut s) = match self.sub_key {
            Some((sj, s)) if same_epoch && sj <= j => (sj, s),
            _ => (0, first_sub(&k)),
        };
        while sj < j {
            s = next_sub(&s);
            sj += 1;
        }
        self.sub_key = Some((j, s));
        s
    }

    /// Takes the next record; `prev_h` is the `h` of the record before it
    /// in the stream (`None` when it is the first one seen).
    pub fn observe(&mut self, rec: &ParsedRecord, prev_h: Option<&str>) -> Result<(), SealError> {
        match rec.code {
            START_CODE if rec.source == "Appliance" => {
                self.restarted = true;
                self.report.unsealed_records += 1;
                Ok(())
            }
            SEAL_CODE if rec.source == "Appliance" => self.seal(rec, prev_h),
            _ => {
                self.report.unsealed_records += 1;
                Ok(())
            }
        }
    }

    fn seal(&mut self, rec: &ParsedRecord, prev_h: Option<&str>) -> Result<(), SealError> {
        let f = SealFields::of(rec)?;
        let seq = rec.seq;
        let missing = |why: String| SealError::Missing {
            seq,
            epoch: f.epoch,
            sub: f.sub,
            why,
        };
        if f.last.checked_add(1) != Some(seq) {
            return Err(SealError::Malformed {
                seq,
                why: format!("covers up to seq {}, not the record before it", f.last),
            });
        }
        if let Some(actual) = prev_h {
            if actual != f.head {
                return Err(SealError::HeadMismatch {
                    seq,
                    named: f.head.clone(),
                    actual: actual.to_string(),
                });
            }
        }
        if let Some(vk) = self.key {
            let from = vk.epoch_start(f.epoch);
            let to = vk.epoch_start(f.epoch.saturating_add(1));
            if rec.ts < from || rec.ts >= to {
                return Err(SealError::OutOfWindow {
                    seq,
                    epoch: f.epoch,
                    ts: crate::record::format_ts(rec.ts),
                    from: crate::record::format_ts(from),
                    to: crate::record::format_ts(to),
                });
            }
            let s = self.sub_key(vk, f.epoch, f.sub);
            let want = mac_hex(&s, &seal_message(&f));
            if want != f.mac {
                return Err(SealError::BadMac {
                    seq,
                    epoch: f.epoch,
                    sub: f.sub,
                });
            }
        }
        if let Some((pseq, p)) = &self.prev {
            let in_order = f.epoch > p.epoch || (f.epoch == p.epoch && f.sub > p.sub);
            if !in_order {
                return Err(missing(format!(
                    "does not follow the previous seal (epoch {}.{} at seq {pseq})",
                    p.epoch, p.sub
                )));
            }
            let expect_sub = if f.epoch == p.epoch { p.sub + 1 } else { 0 };
            let contiguous = f.first == pseq + 1;
            if f.sub != expect_sub + f.lost || !contiguous {
                if self.restarted {
                    // The daemon stopped in between: a seal whose key was
                    // already retired can be lost in a crash.
                    self.report.gaps_at_restart += 1;
                } else {
                    return Err(missing(format!(
                        "a seal is missing after the one at seq {pseq} (epoch {}.{}): \
                         expected sub {expect_sub} covering from seq {}",
                        p.epoch,
                        p.sub,
                        pseq + 1
                    )));
                }
            }
        }
        let point = SealPoint {
            seq,
            epoch: f.epoch,
            sub: f.sub,
            ts: rec.ts,
            reason: f.reason.clone(),
        };
        if self.report.first.is_none() {
            self.report.first = Some(point.clone());
        }
        self.report.last = Some(point);
        self.report.seals += 1;
        self.report.unsealed_records = 0;
        self.restarted = false;
        self.prev = Some((seq, f));
        Ok(())
    }

    /// Counts `n` records that were not passed to [`Self::observe`]
    /// (ordinary records skipped by a light scan).
    pub fn skip(&mut self, n: u64) {
        self.report.unsealed_records += n;
    }

    /// Sets the number of records after the last seal.
    pub fn set_unsealed(&mut self, n: u64) {
        self.report.unsealed_records = n;
    }

    /// Seq of the last seal seen.
    pub fn last_seal_seq(&self) -> Option<u64> {
        self.prev.as_ref().map(|(s, _)| *s)
    }

    /// The report.
    pub fn finish(self) -> SealReport {
        self.report
    }
}

/// Checks the seals of an ordered stream of records (every record, in
/// seq order, as in a log set or a merged replica).
pub fn check_seals<'a>(
    records: impl IntoIterator<Item = &'a ParsedRecord>,
    key: Option<&VerifyKey>,
) -> Result<SealReport, SealError> {
    let mut c = SealChecker::new(key);
    let mut prev_h: Option<&str> = None;
    for r in records {
        c.observe(r, prev_h)?;
        prev_h = Some(&r.h);
    }
    Ok(c.finish())
}

/// The high-water mark: the highest seq known durable, and its `h`. Kept
/// in the state directory so a log that was cut back is noticed at
/// start-up and seq never repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighWaterMark {
    /// Highest durable seq.
    pub seq: u64,
    /// Its `h`.
    pub h: String,
}

/// File name of the high-water mark in the state directory.
pub const HWM_FILE: &str = "high-water-mark";

impl HighWaterMark {
    /// Reads the mark of `state_dir`; `Ok(None)` when there is none.
    pub fn load(state_dir: &Path) -> Result<Option<HighWaterMark>, String> {
        let path = state_dir.join(HWM_FILE);
        let Some(bytes) = fsutil::read_file(&path).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let malformed = || format!("{}: malformed", path.display());
        let newest = slotfile::parse(&bytes).ok_or_else(malformed)?;
        HighWaterMark::from_text(&String::from_utf8_lossy(&newest.payload))
            .map(Some)
            .ok_or_else(malformed)
    }

    fn from_text(text: &str) -> Option<HighWaterMark> {
        let mut seq = None;
        let mut h = None;
        for tok in text.split_whitespace() {
            if let Some(v) = tok.strip_prefix("seq=") {
                seq = v.parse().ok();
            } else if let Some(v) = tok.strip_prefix("h=") {
                h = Some(v.to_string());
            }
        }
        Some(HighWaterMark { seq: seq?, h: h? })
    }

    /// Opens (creating it when missing) the mark's file in `state` for
    /// [`HighWaterMark::store`].
    pub fn open_file(state: &Dir) -> Result<SlotFile, String> {
        SlotFile::open(state, HWM_FILE, Some(fsutil::STATE_FILE_MODE))
            .map(|(f, _)| f)
            .map_err(|e| e.to_string())
    }

    /// Writes the mark into `file` in place, synced (one data sync: no
    /// rename, no directory sync, so no journal commit for the log's own
    /// sync to wait behind).
    pub fn store(&self, file: &mut SlotFile) -> Result<(), String> {
        let text = format!("seq={} h={}\n", self.seq, self.h);
        file.write(text.as_bytes(), Wipe::Keep)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{self, Chain, Entry, Format, Stamp, GENESIS};

    fn vk(t0: i64, interval: u64) -> VerifyKey {
        VerifyKey {
            seed: [7u8; 32],
            t0,
            interval,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap()
    }

    /// A record stream with seals made by `key` at the given times.
    struct Log {
        recs: Vec<ParsedRecord>,
        h: String,
        key: SealKey,
    }

    impl Log {
        fn new(key: SealKey) -> Log {
            Log {
                recs: vec![],
                h: GENESIS.to_string(),
                key,
            }
        }
        fn push(&mut self, e: &Entry, ts: DateTime<Utc>) {
            let st = Stamp {
                ts,
                host: "a1",
                seq: self.recs.len() as u64 + 1,
            };
            let mut body = String::new();
            record::text_body(e, &st, &mut body);
            let h = Chain::sha256().next(&self.h, &body);
            let line = record::seal(Format::Text, &body, &h);
            self.recs.push(record::parse_line(&line).unwrap());
            self.h = h;
        }
        fn event(&mut self, ts: i64) {
            self.push(&Entry::appliance(60001).with_message("x"), at(ts));
        }
        fn seal(&mut self, ts: i64, reason: &str) {
            let seq = self.recs.len() as u64 + 1;
            let t = self.key.seal_time(at(ts));
            let f = self.key.seal(&SealRequest {
                ts: t,
                seq,
                head: &self.h.clone(),
                reason,
                lost: 0,
            });
            let mut e = Entry::appliance(SEAL_CODE);
            for (k, v) in f.to_fields() {
                e = e.field(k, v);
            }
            self.push(&e, t);
        }
    }

    #[test]
    fn verify_key_round_trips_and_hides_its_seed() {
        let k = vk(1_700_000_000, 900);
        let s = k.to_string();
        assert!(s.starts_with("nxseal1-0707"), "{s}");
        assert_eq!(s.parse::<VerifyKey>().unwrap(), k);
        assert!(!format!("{k:?}").contains("0707"));
        assert!("nxseal1-00-1-1".parse::<VerifyKey>().is_err());
        assert!("nxseal2-x".parse::<VerifyKey>().is_err());
    }

    #[test]
    fn key_file_round_trips() {
        let mut k = SealKey::from_verify_key(&vk(100, 10));
        k.advance_to(3);
        let back = SealKey::from_file_text(&k.to_file_text()).unwrap();
        assert_eq!(back, k);
        assert!(SealKey::from_file_text("junk").is_err());
    }

    #[test]
    fn seals_verify_in_order_and_across_epochs() {
        let v = vk(1000, 10);
        let mut log = Log::new(SealKey::from_verify_key(&v));
        log.event(1001);
        log.seal(1002, "rotation");
        log.event(1003);
        log.seal(1004, "interval");
        log.event(1025);
        log.seal(1035, "interval");
        let r = check_seals(&log.recs, Some(&v)).unwrap();
        assert_eq!(r.seals, 3);
        assert!(r.checked);
        assert_eq!(r.last.as_ref().unwrap().epoch, 3);
        assert_eq!(r.unsealed_records, 0);
        // Without the key, structure only.
        let r = check_seals(&log.recs, None).unwrap();
        assert!(!r.checked);
    }

    #[test]
    fn a_rewritten_record_before_a_seal_fails_its_mac() {
        let v = vk(1000, 10);
        let mut log = Log::new(SealKey::from_verify_key(&v));
        log.event(1001);
        log.seal(1002, "interval");
        // The attacker rewrites seq 1 and recomputes the chain and the
        // seal's head: only the MAC is left to catch it.
        let mut forged = Log::new(SealKey::from_verify_key(&vk(1000, 10)));
        forged.push(&Entry::appliance(60001).with_message("y"), at(1001));
        let mut seal = log.recs[1].clone();
        for (k, v) in seal.fields.iter_mut() {
            if k == "head" {
                *v = forged.h.clone();
            }
        }
        let recs = vec![forged.recs[0].clone(), seal];
        let e = check_seals(&recs, Some(&v)).unwrap_err();
        assert!(matches!(e, SealError::BadMac { .. }), "{e}");
    }

    #[test]
    fn a_stolen_key_cannot_seal_an_earlier_epoch() {
        let v = vk(1000, 10);
        let mut key = SealKey::from_verify_key(&v);
        let mut log = Log::new(key.clone());
        log.event(1001);
        log.seal(1005, "interval");
        log.event(1012);
        log.seal(1015, "interval");
        // Stolen after the second seal: epoch 1, sub 1.
        key = log.key.clone();
        // Forge a replacement of the second seal with the stolen key at
        // the same time: it gets sub 1, not 0, and the MAC of sub 0 is
        // out of reach.
        let mut forged = Log::new(key);
        forged.recs = log.recs[..3].to_vec();
        forged.h = forged.recs[2].h.clone();
        forged.seal(1015, "interval");
        let e = check_seals(&forged.recs, Some(&v)).unwrap_err();
        assert!(matches!(e, SealError::Missing { .. }), "{e}");
        // Claiming sub 0 of epoch 1 with the stolen sub-key fails the MAC.
        let mut s = forged.recs[3].clone();
        for (k, val) in s.fields.iter_mut() {
            if k == "sub" {
                *val = "0".into();
            }
        }
        let mut recs = forged.recs[..3].to_vec();
        recs.push(s);
        let e = check_seals(&recs, Some(&v)).unwrap_err();
        assert!(matches!(e, SealError::BadMac { .. }), "{e}");
        // A seal stamped before its epoch is out of its window.
        let mut early = log.recs.clone();
        early[3].ts = at(1009);
        let e = check_seals(&early, Some(&v)).unwrap_err();
        assert!(matches!(e, SealError::OutOfWindow { .. }), "{e}");
    }

    #[test]
    fn a_removed_seal_is_missing_unless_the_daemon_restarted() {
        let v = vk(1000, 10);
        let mut log = Log::new(SealKey::from_verify_key(&v));
        log.event(1001);
        log.seal(1002, "interval");
        log.event(1003);
        log.seal(1004, "interval");
        log.event(1005);
        log.seal(1006, "interval");
        let mut recs = log.recs.clone();
        // Drop the middle seal (and pretend the chain was rebuilt).
        recs.remove(3);
        let e = check_seals(&recs, None).unwrap_err();
        assert!(matches!(e, SealError::Missing { .. }), "{e}");
    }

    #[test]
    fn unsealed_time_counts_from_the_last_seal() {
        let v = vk(1000, 10);
        let mut log = Log::new(SealKey::from_verify_key(&v));
        log.event(1001);
        log.seal(1002, "interval");
        let r = check_seals(&log.recs, Some(&v)).unwrap();
        assert_eq!(r.unsealed_for(at(5000)), Some(chrono::Duration::zero()));
        // A live daemon seals every interval: the time since the last seal
        // counts even when nothing follows it.
        assert_eq!(
            r.since_last_seal(at(5000)),
            Some(chrono::Duration::seconds(3998))
        );
        log.event(1003);
        let r = check_seals(&log.recs, Some(&v)).unwrap();
        assert_eq!(r.unsealed_records, 1);
        assert_eq!(
            r.unsealed_for(at(1012)),
            Some(chrono::Duration::seconds(10))
        );
    }

    #[test]
    fn high_water_mark_round_trips() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(HighWaterMark::load(d.path()).unwrap(), None);
        let dir = Dir::open(d.path()).unwrap();
        let m = HighWaterMark {
            seq: 42,
            h: "ab".repeat(16),
        };
        let mut f = HighWaterMark::open_file(&dir).unwrap();
        m.store(&mut f).unwrap();
        assert_eq!(HighWaterMark::load(d.path()).unwrap(), Some(m.clone()));
        let later = HighWaterMark {
            seq: 43,
            h: "cd".repeat(16),
        };
        later.store(&mut f).unwrap();
        assert_eq!(HighWaterMark::load(d.path()).unwrap(), Some(later));
    }

    #[test]
    fn the_key_file_evolves_in_place_and_keeps_no_used_key() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("seal.key");
        let (mut key, _) = SealKey::generate(at(1000), 10).unwrap();
        KeyFile::create(&path, &key).unwrap();
        assert!(KeyFile::create(&path, &key).is_err(), "never over a key");
        let (mut kf, loaded) = KeyFile::open(&path).unwrap();
        assert!(loaded == key);
        let mut used = Vec::new();
        for i in 0..3 {
            used.push(hex::encode(key.sub_key));
            key.seal(&SealRequest {
                ts: at(1001 + i),
                seq: 1,
                head: GENESIS,
                reason: "interval",
                lost: 0,
            });
            kf.store(&key).unwrap();
            assert!(SealKey::load(&path).unwrap() == key);
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1024);
        let text = String::from_utf8_lossy(&bytes);
        for u in used {
            assert!(!text.contains(&u), "a used sub-key is still in the file");
        }
    }
}
