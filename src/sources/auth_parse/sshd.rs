//! sshd's messages: logons, failures, logoffs and the closing lines of
//! connections that never authenticated, each recorded once however many
//! of sshd's and PAM's lines tell it.

use super::*;

impl AuthClassifier {
    pub(super) fn ssh(&mut self, pid: Option<u32>, msg: &str) -> Verdict {
        let msg = msg.strip_suffix(" [preauth]").unwrap_or(msg);
        let msg_noerr = msg
            .strip_prefix("error: ")
            .or_else(|| msg.strip_prefix("fatal: "))
            .unwrap_or(msg);

        if let Some(rest) = msg.strip_prefix("Accepted ") {
            return self.accepted(pid, rest);
        }
        if let Some(rest) = msg.strip_prefix("Failed ") {
            return self.failed_attempt(pid, rest);
        }
        if let Some(rest) = msg.strip_prefix("Invalid user ") {
            return self.invalid_user(pid, rest);
        }
        if let Some(rest) = msg_noerr.strip_prefix("maximum authentication attempts exceeded for ")
        {
            return match from_clause(rest) {
                Some(fc) => {
                    self.failed.insert(pid);
                    let (user, invalid) = strip_invalid(fc.who);
                    Verdict::Record(failure(
                        user,
                        Some(fc.addr),
                        fc.port,
                        "too many attempts",
                        invalid,
                    ))
                }
                None => Verdict::Unknown,
            };
        }
        if let Some(rest) = msg_noerr.strip_prefix("PAM: ") {
            return self.pam_error(pid, rest);
        }
        if let Some(v) = msg
            .strip_prefix("User ")
            .and_then(|r| self.not_allowed(pid, r))
        {
            return v;
        }
        if let Some(rest) = msg_noerr.strip_prefix("Access denied for user ") {
            // PAM's account stage refused (expired, pam_access, …).
            return match rest.split_once(" by ") {
                Some((user, why)) if !user.is_empty() && !user.contains(' ') => {
                    self.failed.insert(pid);
                    let reason = format!("access denied by {why}");
                    Verdict::Record(failure(user, None, None, &reason, false))
                }
                _ => Verdict::Unknown,
            };
        }
        if let Some(rest) = msg.strip_prefix("ROOT LOGIN REFUSED FROM ") {
            let (addr, port) = match rest.split_once(" port ") {
                Some((a, p)) if is_digits(p) => (a, Some(p)),
                _ => (rest, None),
            };
            if addr.is_empty() || addr.contains(' ') {
                return Verdict::Unknown;
            }
            self.failed.insert(pid);
            return Verdict::Record(failure(
                "root",
                Some(addr),
                port,
                "root login refused",
                false,
            ));
        }
        if let Some(rest) = msg.strip_prefix("pam_unix(") {
            return self.ssh_pam_unix(pid, rest);
        }
        if let Some(rest) = msg.strip_prefix("PAM ") {
            // "PAM 2 more authentication failures; logname= … rhost=H  user=U"
            if rest.contains("more authentication failure") {
                return self.summary_failure(
                    pid,
                    pam_kv(rest, "user"),
                    pam_kv(rest, "rhost"),
                    None,
                    "authentication failures",
                );
            }
            if rest.starts_with("service(") && rest.contains("ignoring max retries") {
                return Verdict::Known;
            }
            return Verdict::Unknown;
        }
        if let Some(v) = self.logoff(msg) {
            return v;
        }
        if let Some(v) = self.preauth_close(pid, msg) {
            return v;
        }
        if ssh_noise(msg, msg_noerr) {
            return Verdict::Known;
        }
        Verdict::Unknown
    }

    fn accepted(&mut self, pid: Option<u32>, rest: &str) -> Verdict {
        let Some((method, who)) = rest.split_once(" for ") else {
            return Verdict::Unknown;
        };
        let Some(fc) = from_clause(who) else {
            return Verdict::Unknown;
        };
        if method.contains(' ') || fc.who.is_empty() {
            return Verdict::Unknown;
        }
        let (user, _) = strip_invalid(fc.who);
        if self.sessions.len() >= STATE_CAP {
            self.sessions.pop_front();
        }
        self.sessions.push_back(Session {
            pid,
            user: user.to_string(),
            client: Some(fc.addr.to_string()),
            port: fc.port.map(str::to_string),
            method: Some(method.to_string()),
            logged_off: false,
        });
        let mut e = Entry::appliance(SSH_LOGON).with_user(user);
        e.client = Some(fc.addr.to_string());
        if let Some(p) = fc.port {
            e = e.field("port", p);
        }
        e = e.field("method", method);
        if let Some(k) = fc.info {
            e = e.field("key", k);
        }
        Verdict::Record(e)
    }

    fn failed_attempt(&mut self, pid: Option<u32>, rest: &str) -> Verdict {
        let Some((method, who)) = rest.split_once(" for ") else {
            return Verdict::Unknown;
        };
        let Some(fc) = from_clause(who) else {
            return Verdict::Unknown;
        };
        if method.contains(' ') {
            return Verdict::Unknown;
        }
        // "none" is the client asking which methods exist, not an attempt.
        if method == "none" {
            return Verdict::Known;
        }
        if method.starts_with("keyboard-interactive") && self.pam_errors.remove(pid) {
            return Verdict::Known;
        }
        self.failed.insert(pid);
        let (user, invalid) = strip_invalid(fc.who);
        let mut e = failure(
            user,
            Some(fc.addr),
            fc.port,
            &format!("failed {method}"),
            invalid,
        );
        e = e.field("method", method);
        if let Some(k) = fc.info {
            e = e.field("key", k);
        }
        Verdict::Record(e)
    }

    fn invalid_user(&mut self, pid: Option<u32>, rest: &str) -> Verdict {
        // "Invalid user U from A port N" (7.5+), "Invalid user U from A".
        let Some(fc) = from_clause(rest) else {
            return Verdict::Unknown;
        };
        if fc.info.is_some() {
            return Verdict::Unknown;
        }
        self.failed.insert(pid);
        Verdict::Record(failure(
            fc.who,
            Some(fc.addr),
            fc.port,
            "invalid user",
            true,
        ))
    }

    /// `error: PAM: <reason> for [illegal user ]U from HOST`.
    fn pam_error(&mut self, pid: Option<u32>, rest: &str) -> Verdict {
        let Some((reason, tail)) = rest.split_once(" for ") else {
            return Verdict::Unknown;
        };
        let Some((who, host)) = tail.rsplit_once(" from ") else {
            return Verdict::Unknown;
        };
        if host.is_empty() || host.contains(' ') {
            return Verdict::Unknown;
        }
        let (user, invalid) = match who.strip_prefix("illegal user ") {
            Some(u) => (u, true),
            None => (who, false),
        };
        self.failed.insert(pid);
        self.pam_errors.insert(pid);
        let reason = reason.to_ascii_lowercase();
        let e = failure(user, Some(host), None, &reason, invalid)
            .field("method", "keyboard-interactive/pam");
        Verdict::Record(e)
    }

    /// `User U from H not allowed because …`, `User U not allowed because …`.
    fn not_allowed(&mut self, pid: Option<u32>, rest: &str) -> Option<Verdict> {
        let (head, why) = rest.split_once(" not allowed because ")?;
        let (user, host) = match head.rsplit_once(" from ") {
            Some((u, h)) if !h.contains(' ') && !h.is_empty() => (u, Some(h)),
            _ => (head, None),
        };
        self.failed.insert(pid);
        let reason = format!("not allowed because {why}");
        Some(Verdict::Record(failure(user, host, None, &reason, false)))
    }

    fn ssh_pam_unix(&mut self, pid: Option<u32>, rest: &str) -> Verdict {
        // "sshd:session): session opened for user U(uid=1000) by (uid=0)"
        let Some((service, text)) = rest.split_once("): ") else {
            return Verdict::Unknown;
        };
        match service {
            "sshd:session" => {
                if text.starts_with("session opened for user ") {
                    return Verdict::Known;
                }
                if let Some(u) = text.strip_prefix("session closed for user ") {
                    return self.pam_session_closed(pid, u.trim());
                }
                Verdict::Unknown
            }
            "sshd:auth" => {
                if text.starts_with("authentication failure;")
                    || text.starts_with("check pass; user unknown")
                    || text.starts_with("auth could not identify password for")
                {
                    Verdict::Known
                } else {
                    Verdict::Unknown
                }
            }
            _ => Verdict::Unknown,
        }
    }

    fn pam_session_closed(&mut self, pid: Option<u32>, user: &str) -> Verdict {
        if user.is_empty() || user.contains(' ') {
            return Verdict::Unknown;
        }
        let found = self
            .sessions
            .iter()
            .rposition(|s| pid.is_some() && s.pid == pid && s.user == user);
        if let Some(i) = found {
            if self.sessions[i].logged_off {
                self.sessions.remove(i);
                return Verdict::Known;
            }
            self.sessions[i].logged_off = true;
            let s = self.sessions[i].clone();
            return Verdict::Record(logoff(
                &s.user,
                s.client.as_deref(),
                s.port.as_deref(),
                s.method.as_deref(),
                "session closed",
            ));
        }
        // The session's own process may have reported it first for a logon
        // this classifier did not see (started after the logon).
        if let Some(i) = self
            .sessions
            .iter()
            .rposition(|s| s.pid.is_none() && s.user == user && s.logged_off)
        {
            self.sessions.remove(i);
            return Verdict::Known;
        }
        Verdict::Record(logoff(user, None, None, None, "session closed"))
    }

    /// Post-authentication ends of a connection, logged by the session's
    /// own process: `Disconnected from user U A port N`, `Connection closed
    /// by user …`, `Connection reset by user …`, `Timeout, client not
    /// responding from user …`.
    fn logoff(&mut self, msg: &str) -> Option<Verdict> {
        const PREFIXES: [(&str, &str); 4] = [
            ("Disconnected from user ", "disconnected"),
            ("Connection closed by user ", "connection closed"),
            ("Connection reset by user ", "connection reset"),
            ("Timeout, client not responding from user ", "timeout"),
        ];
        let (rest, reason) = PREFIXES
            .iter()
            .find_map(|(p, r)| msg.strip_prefix(p).map(|rest| (rest, *r)))?;
        let Some((user, addr, port)) = user_addr_port(rest) else {
            return Some(Verdict::Unknown);
        };
        if let Some(i) = self.sessions.iter().rposition(|s| {
            s.user == user && s.client.as_deref() == Some(addr) && s.port.as_deref() == Some(port)
        }) {
            if self.sessions[i].logged_off {
                return Some(Verdict::Known);
            }
            self.sessions[i].logged_off = true;
            let method = self.sessions[i].method.clone();
            return Some(Verdict::Record(logoff(
                user,
                Some(addr),
                Some(port),
                method.as_deref(),
                reason,
            )));
        }
        if self.sessions.len() >= STATE_CAP {
            self.sessions.pop_front();
        }
        self.sessions.push_back(Session {
            pid: None,
            user: user.to_string(),
            client: Some(addr.to_string()),
            port: Some(port.to_string()),
            method: None,
            logged_off: true,
        });
        Some(Verdict::Record(logoff(
            user,
            Some(addr),
            Some(port),
            None,
            reason,
        )))
    }

    /// Pre-authentication ends of a connection that tried an account.
    fn preauth_close(&mut self, pid: Option<u32>, msg: &str) -> Option<Verdict> {
        const PREFIXES: [(&str, &str); 4] = [
            (
                "Connection closed by ",
                "connection closed during authentication",
            ),
            ("Disconnected from ", "disconnected during authentication"),
            (
                "Connection reset by ",
                "connection reset during authentication",
            ),
            ("Disconnecting ", "too many authentication failures"),
        ];
        let (rest, reason) = PREFIXES
            .iter()
            .find_map(|(p, r)| msg.strip_prefix(p).map(|rest| (rest, *r)))?;
        let (rest, invalid) = if let Some(r) = rest.strip_prefix("authenticating user ") {
            (r, false)
        } else if let Some(r) = rest.strip_prefix("invalid user ") {
            (r, true)
        } else {
            return None;
        };
        // "Disconnecting authenticating user U A port N: Too many authentication failures"
        let (rest, why) = match rest.split_once(": ") {
            Some((r, w)) if reason.starts_with("too many") => (r, Some(w)),
            _ => (rest, None),
        };
        let (user, addr, port) = user_addr_port(rest)?;
        let reason = match why {
            Some(w) => w.to_ascii_lowercase(),
            None => reason.to_string(),
        };
        let v = self.summary_failure(pid, Some(user), Some(addr), Some(port), &reason);
        Some(match v {
            Verdict::Record(e) if invalid => Verdict::Record(e.field("invalid_user", "true")),
            v => v,
        })
    }

    /// A line that sums up a connection's failures: recorded only when no
    /// failure line was recorded for that process.
    fn summary_failure(
        &mut self,
        pid: Option<u32>,
        user: Option<&str>,
        addr: Option<&str>,
        port: Option<&str>,
        reason: &str,
    ) -> Verdict {
        if self.failed.contains(pid) {
            return Verdict::Known;
        }
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Verdict::Known;
        };
        self.failed.insert(pid);
        Verdict::Record(failure(
            user,
            addr.filter(|a| !a.is_empty()),
            port,
            reason,
            false,
        ))
    }
}

pub(super) fn failure(
    user: &str,
    client: Option<&str>,
    port: Option<&str>,
    reason: &str,
    invalid: bool,
) -> Entry {
    let mut e = Entry::appliance(SSH_LOGON_FAILED).with_user(user);
    e.client = client.map(str::to_string);
    if let Some(p) = port {
        e = e.field("port", p);
    }
    e = e.field("reason", reason);
    if invalid {
        e = e.field("invalid_user", "true");
    }
    e
}

pub(super) fn logoff(
    user: &str,
    client: Option<&str>,
    port: Option<&str>,
    method: Option<&str>,
    reason: &str,
) -> Entry {
    let mut e = Entry::appliance(SSH_LOGOFF).with_user(user);
    e.client = client.map(str::to_string);
    if let Some(p) = port {
        e = e.field("port", p);
    }
    if let Some(m) = method {
        e = e.field("method", m);
    }
    e.field("reason", reason)
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `invalid user U` → (U, true).
pub(super) fn strip_invalid(who: &str) -> (&str, bool) {
    match who.strip_prefix("invalid user ") {
        Some(u) => (u, true),
        None => (who, false),
    }
}

/// `U A port N` → (U, A, N); U may be empty or contain spaces.
pub(super) fn user_addr_port(s: &str) -> Option<(&str, &str, &str)> {
    let (head, port) = s.rsplit_once(" port ")?;
    if !is_digits(port) {
        return None;
    }
    let (user, addr) = head.rsplit_once(' ')?;
    if addr.is_empty() {
        return None;
    }
    Some((user, addr, port))
}

/// The tail `WHO from ADDR [port N] [ssh2[: KEY INFO]]` of sshd lines.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FromClause<'a> {
    who: &'a str,
    addr: &'a str,
    port: Option<&'a str>,
    info: Option<&'a str>,
}

/// Splits the `from` clause. The user name (attacker-chosen for invalid
/// users) and a certificate ID in the key info may both contain ` from `;
/// the rightmost ` from ` whose remainder is exactly `ADDR port N ssh2`
/// optionally followed by a well-formed key description wins, so neither
/// can forge the client address.
pub(super) fn from_clause(s: &str) -> Option<FromClause<'_>> {
    let cands: Vec<usize> = s.match_indices(" from ").map(|(i, _)| i).collect();
    for strict in [true, false] {
        for &i in cands.iter().rev() {
            if let Some(fc) = from_rest(&s[..i], &s[i + 6..], strict) {
                return Some(fc);
            }
        }
    }
    None
}

pub(super) fn from_rest<'a>(who: &'a str, rem: &'a str, strict: bool) -> Option<FromClause<'a>> {
    let (addr, mut r) = match rem.find(' ') {
        Some(j) => (&rem[..j], &rem[j..]),
        None => (rem, ""),
    };
    if addr.is_empty() {
        return None;
    }
    let mut port = None;
    if let Some(x) = r.strip_prefix(" port ") {
        let end = x.find(' ').unwrap_or(x.len());
        if !is_digits(&x[..end]) {
            return None;
        }
        port = Some(&x[..end]);
        r = &x[end..];
    }
    let mut info = None;
    if let Some(x) = r.strip_prefix(" ssh2") {
        r = x;
        if let Some(i) = r.strip_prefix(": ") {
            if strict && !key_info_ok(i) {
                return None;
            }
            info = Some(i);
            r = "";
        }
    }
    if !r.is_empty() {
        return None;
    }
    Some(FromClause {
        who,
        addr,
        port,
        info,
    })
}

/// `TYPE FP` or `TYPE-CERT FP ID … (serial N) CA TYPE FP`.
pub(super) fn key_info_ok(s: &str) -> bool {
    let fp_ok = |f: &str| (f.starts_with("SHA256:") || f.starts_with("MD5:")) && !f.contains(' ');
    let type_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'@' | b'.' | b'_'))
    };
    let mut it = s.splitn(3, ' ');
    let (Some(t), Some(fp)) = (it.next(), it.next()) else {
        return false;
    };
    if !type_ok(t) || !fp_ok(fp) {
        return false;
    }
    match it.next() {
        None => true,
        Some(rest) => {
            if !t.ends_with("-CERT") || !rest.starts_with("ID ") {
                return false;
            }
            // "ID x (serial 3) CA ED25519 SHA256:…"
            let Some((_, ca)) = rest.rsplit_once(") CA ") else {
                return false;
            };
            let mut c = ca.split(' ');
            matches!((c.next(), c.next(), c.next()), (Some(ct), Some(cf), None) if type_ok(ct) && fp_ok(cf))
                && rest.contains(" (serial ")
        }
    }
}

/// A `key=value` of a PAM log line (`… rhost=1.2.3.4  user=alice`).
pub(super) fn pam_kv<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split([' ', ';'])
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// sshd lines that are not audit events.
pub(super) fn ssh_noise(msg: &str, noerr: &str) -> bool {
    const PREFIXES: [&str; 35] = [
        "Server listening on ",
        "Received signal ",
        "Received SIGHUP",
        "Received disconnect from ",
        "Connection closed by ",
        "Connection reset by ",
        "Disconnected from ",
        "Connection from ",
        "Postponed ",
        "Partial ",
        "Starting session: ",
        "Close session: ",
        "User child is on pid ",
        "Changed root directory to ",
        "Transferred: ",
        "Did not receive identification string from ",
        "Timeout before authentication for ",
        "banner exchange: ",
        "kex_exchange_identification: ",
        "Unable to negotiate with ",
        "Bad protocol version identification ",
        "Protocol major versions differ",
        "ssh_dispatch_run_fatal: ",
        "kex_protocol_error: ",
        "Read error from remote host ",
        "drop connection #",
        "exited MaxStartups throttling",
        "beginning MaxStartups throttling",
        "srclimit_penalise: ",
        "pam_systemd(",
        "pam_env(",
        "subsystem request for ",
        "Accepted key ",
        "Read from socket failed: ",
        "input_userauth_request: invalid user ",
    ];
    PREFIXES.iter().any(|p| msg.starts_with(p) || noerr.starts_with(p))
        || noerr.starts_with("Connection closed by ") // "fatal: Connection closed by …"
        || noerr.starts_with("Timeout before authentication")
        || noerr.starts_with("Received disconnect from ")
        || msg.starts_with("debug")
}
