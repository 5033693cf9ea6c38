//! Escaping of record fields: what makes one line one record, for any
//! input, even read with a plain `grep` (see the module above for the
//! rules), and the reverse for the parser.

use super::RecordError;

/// Escapes `s` for the text or a bracket field (unquoted): `\\`, `\n`,
/// control bytes and the bracket characters `|`, `[`, `]` as `\xNN`,
/// invisible or reordering characters as `\u{…}` (see [`is_invisible`]).
/// The result has no raw `|`, `[` or `]`, so it can neither end a bracket
/// field, open a second bracket, nor imitate the ` | ` before the trailer.
pub fn escape_unquoted(s: &str, out: &mut String) {
    escape_into(s, out, b"");
}

/// Escapes the host name token: as [`escape_unquoted`], plus the space
/// that ends the token (a configured name is validated, this keeps any
/// other name parseable).
pub fn escape_host(s: &str, out: &mut String) {
    escape_into(s, out, b" ");
}

/// Escapes `s` as a quoted value (quotes included): as [`escape_unquoted`],
/// plus `\"`. The bracket characters are escaped in values too, so that no
/// value can look like a bracket to `grep`.
pub fn escape_quoted(s: &str, out: &mut String) {
    out.push('"');
    escape_into(s, out, b"\"");
    out.push('"');
}

/// The one escaping loop behind [`escape_unquoted`], [`escape_host`] and
/// [`escape_quoted`]: runs of characters that need nothing are copied as
/// one slice (the writer renders every record on one thread, so this is
/// its hot path); `extra` are further ASCII bytes to escape (`"` in
/// values, the space in the host token).
fn escape_into(s: &str, out: &mut String, extra: &[u8]) {
    let bytes = s.as_bytes();
    let mut plain = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii() {
            let special = b < 0x20
                || b == 0x7f
                || matches!(b, b'\\' | b'|' | b'[' | b']')
                || extra.contains(&b);
            if special {
                out.push_str(&s[plain..i]);
                match b {
                    b'\\' => out.push_str("\\\\"),
                    b'"' => out.push_str("\\\""),
                    b'\n' => out.push_str("\\n"),
                    _ => {
                        out.push_str("\\x");
                        push_hex(out, u32::from(b), 2);
                    }
                }
                plain = i + 1;
            }
            i += 1;
            continue;
        }
        let Some(c) = s[i..].chars().next() else {
            break;
        };
        if is_invisible(c) {
            out.push_str(&s[plain..i]);
            out.push_str("\\u{");
            push_hex(out, c as u32, 4);
            out.push('}');
            plain = i + c.len_utf8();
        }
        i += c.len_utf8();
    }
    out.push_str(&s[plain..]);
}

/// Appends `v` in lower-case hex, at least `min` digits. Not `write!`:
/// the formatting machinery costs several times the escaping itself, and a
/// line of invisible characters is escaped character by character on the
/// writer thread.
fn push_hex(out: &mut String, v: u32, min: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 8];
    let mut n = 0;
    let mut v = v;
    while n < min || v != 0 {
        digits[7 - n] = HEX[(v & 0xf) as usize];
        v >>= 4;
        n += 1;
        if n == 8 {
            break;
        }
    }
    // Hex digits are ASCII: one append instead of one per digit.
    if let Ok(hex) = std::str::from_utf8(&digits[8 - n..]) {
        out.push_str(hex);
    }
}

/// Whether `c` is invisible or reorders text (Unicode categories Cf, Zl,
/// Zp, as of Unicode 15, plus C1 controls): a reader would not see it, or
/// would see the text around it in another order, so it is written as
/// `\u{…}`. A short range table instead of a Unicode crate: these
/// categories are small and change rarely.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x80..=0x9f
            | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    )
}

/// Reverses [`escape_unquoted`] / the inside of [`escape_quoted`].
pub fn unescape(s: &str) -> Result<String, RecordError> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            // `\|`, `\[`, `\]`: how logs written before `\xNN` escaped them.
            Some(c @ ('|' | '[' | ']')) => out.push(c),
            Some('n') => out.push('\n'),
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                let v = u32::from_str_radix(&h, 16)
                    .map_err(|_| RecordError::Malformed(format!("bad \\x escape {h:?}")))?;
                out.push(
                    char::from_u32(v)
                        .ok_or_else(|| RecordError::Malformed(format!("bad \\x escape {h:?}")))?,
                );
            }
            Some('u') => {
                if it.next() != Some('{') {
                    return Err(RecordError::Malformed("bad \\u escape".into()));
                }
                let h: String = it.by_ref().take_while(|c| *c != '}').collect();
                let v = u32::from_str_radix(&h, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| RecordError::Malformed(format!("bad \\u escape {h:?}")))?;
                out.push(v);
            }
            other => {
                return Err(RecordError::Malformed(format!(
                    "unknown escape \\{}",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
}
