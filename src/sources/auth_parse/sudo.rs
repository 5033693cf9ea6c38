//! sudo's messages: commands run and refused, with a command sudo split
//! over two lines kept as one.

use super::*;

impl AuthClassifier {
    pub(super) fn sudo(&mut self, pid: Option<u32>, msg: &str) -> Verdict {
        // PAM module notices (`pam_unix(sudo:session): session opened …`,
        // `pam_limits(sudo:session): Could not set limit …`) and sudo's own
        // notices (`unable to resolve host …`) are not sudo events: no
        // ` : ` after a user name, so they fall through to raw 60109 below.
        if msg.starts_with("pam_") {
            return Verdict::Unknown;
        }
        let Some((user, rest)) = msg.split_once(" : ") else {
            return Verdict::Unknown;
        };
        let user = user.trim();
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Verdict::Unknown;
        }
        if let Some(cont) = rest.strip_prefix("(command continued) ") {
            // sudo splits lines longer than its syslog limit; the rest of
            // the command continues the previous record of this process.
            let Some(p) = pid else {
                return Verdict::Unknown;
            };
            let Some((code, last_user)) = self.sudo_last.get(&p).cloned() else {
                return Verdict::Unknown;
            };
            if last_user != user {
                return Verdict::Unknown;
            }
            let e = Entry::appliance(code)
                .with_user(user)
                .field("command", cont)
                .field("continued", "true");
            return Verdict::Record(e);
        }
        let Some(line) = parse_sudo_line(rest) else {
            return Verdict::Unknown;
        };
        let code = match line.reason {
            None if line.command.is_some() => SUDO_COMMAND,
            None => return Verdict::Unknown,
            Some(r) if is_sudo_refusal(r) => SUDO_REFUSED,
            Some(_) => return Verdict::Unknown,
        };
        let mut e = Entry::appliance(code).with_user(user);
        if let Some(r) = line.reason {
            e = e.field("reason", r);
        }
        for (k, v) in [
            ("tty", line.tty),
            ("cwd", line.cwd),
            ("target_user", line.target_user),
            ("target_group", line.target_group),
            ("env", line.env),
            ("command", line.command),
        ] {
            if let Some(v) = v {
                e = e.field(k, v);
            }
        }
        if let Some(p) = pid {
            if self.sudo_last.len() >= STATE_CAP {
                self.sudo_last.clear();
            }
            self.sudo_last.insert(p, (code, user.to_string()));
        }
        Verdict::Record(e)
    }
}

/// A parsed `TTY=… ; PWD=… ; USER=… ; COMMAND=…` line (after `user : `).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SudoLine<'a> {
    reason: Option<&'a str>,
    tty: Option<&'a str>,
    cwd: Option<&'a str>,
    target_user: Option<&'a str>,
    target_group: Option<&'a str>,
    env: Option<&'a str>,
    command: Option<&'a str>,
}

/// Segments are separated by ` ; `; `COMMAND=` is last and takes the rest
/// of the line (a command may itself contain ` ; `). A first segment that
/// is not `KEY=value` is the reason of a refusal.
pub(super) fn parse_sudo_line(s: &str) -> Option<SudoLine<'_>> {
    let mut out = SudoLine::default();
    let mut rest = s;
    let mut first = true;
    let mut any_key = false;
    loop {
        if let Some(cmd) = rest.strip_prefix("COMMAND=") {
            out.command = Some(cmd);
            any_key = true;
            break;
        }
        let (seg, next) = match rest.split_once(" ; ") {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        let kv = seg.split_once('=').filter(|(k, _)| {
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        });
        match kv {
            Some((k, v)) => {
                any_key = true;
                match k {
                    "TTY" => out.tty = Some(v),
                    "PWD" => out.cwd = Some(v),
                    "USER" => out.target_user = Some(v),
                    "GROUP" => out.target_group = Some(v),
                    "ENV" => out.env = Some(v),
                    // TSID, CHROOT, CWD, … are not audit fields.
                    _ => {}
                }
            }
            None if first => out.reason = Some(seg),
            None => return None,
        }
        first = false;
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    if any_key {
        Some(out)
    } else {
        None
    }
}

/// Reasons sudo logs before `TTY=` when it refuses a command.
pub(super) fn is_sudo_refusal(r: &str) -> bool {
    const REASONS: [&str; 10] = [
        "command not allowed",
        "incorrect password attempt",
        "user NOT in sudoers",
        "user NOT authorized on host",
        "a password is required",
        "no tty present",
        "a terminal is required",
        "sorry, you must have a tty",
        "timed out reading password",
        "authentication failure",
    ];
    REASONS.iter().any(|p| r.contains(p))
}
