//! `nxaudit query`: the records of a time window, from every file of the log
//! (rotated and compressed ones too), through the same search as the Audit
//! trail API ([`crate::search`]) so both return the same lines.
//!
//! Time: `--since` (inclusive) and `--until` (exclusive) take RFC 3339,
//! `yyyy-mm-dd[Thh:mm:ss]` (UTC when no offset), the words `now`, `today`,
//! `yesterday` and `tomorrow` (midnight UTC, as the log's timestamps), or a
//! time relative to now as journalctl writes it (`-2h`, `2h ago`, `2h`,
//! `30m`, `1d`, `1h30m`). A window that is empty by construction (since at
//! or after until) is searched anyway but warned about on stderr. `--before-date` and `--elapsed-hours`
//! mean exactly what the API's `before_date` and `elapsed_hours` mean
//! (`--elapsed-hours` counts back from `--before-date`/`--until`, else from
//! now). Filters: `--code`, `--component`, `--user`, each repeatable or
//! comma-separated. Output: the lines as they are on disk, or one JSON
//! object per record with `--json`, streamed as found. When the plan reads
//! more than a few hundred MB and stderr is a terminal, a progress bar is
//! drawn there (silent otherwise). Exit 0 on success, whether or not
//! anything matched.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chrono::Utc;
use serde_json::{Map, Value};

use super::Context;
use crate::catalog::Component;
use crate::record;
use crate::search::{self, Filter, Search, Window};

/// Above this many bytes to read, progress is shown on stderr.
const PROGRESS_ABOVE: u64 = 256 << 20;

/// Arguments of `nxaudit query`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Records at or after this time: RFC 3339, yyyy-mm-dd[Thh:mm:ss] (UTC),
    /// now, today, yesterday, tomorrow, or -2h / "2h ago" / 30m / 1d.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Records strictly before this time (same forms as --since).
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "before_date",
        allow_hyphen_values = true
    )]
    pub until: Option<String>,
    /// Records strictly before this date or datetime (the API's before_date).
    #[arg(long, value_name = "DATE")]
    pub before_date: Option<String>,
    /// Records of the last N hours before --before-date/--until or now (the API's elapsed_hours).
    #[arg(long, value_name = "HOURS", conflicts_with = "since")]
    pub elapsed_hours: Option<String>,
    /// Only these audit codes.
    #[arg(long, value_name = "CODE", value_delimiter = ',')]
    pub code: Vec<u32>,
    /// Only these components (Engine, Portal, WebConsole/Console, Appliance).
    #[arg(long, value_name = "COMPONENT", value_delimiter = ',')]
    pub component: Vec<String>,
    /// Only records of these accounts.
    #[arg(long, value_name = "USER")]
    pub user: Vec<String>,
    /// One JSON object per record instead of the log lines.
    #[arg(long)]
    pub json: bool,
    /// Never show progress on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Log directory to search instead of the configured one.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

/// Parses a `--since`/`--until` value: the day words `today`, `yesterday`
/// and `tomorrow` (00:00 UTC of that day), else what
/// [`search::parse_time_arg`] accepts.
pub fn parse_time(s: &str, now: chrono::DateTime<Utc>) -> anyhow::Result<chrono::DateTime<Utc>> {
    let day = |offset: i64| {
        let d = now.date_naive() + chrono::Duration::days(offset);
        d.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
    };
    let word = match s.trim().to_ascii_lowercase().as_str() {
        "today" => Some(day(0)),
        "yesterday" => Some(day(-1)),
        "tomorrow" => Some(day(1)),
        _ => None,
    };
    match word {
        Some(Some(t)) => Ok(t),
        Some(None) => bail!("{s:?}: date out of range"),
        None => Ok(search::parse_time_arg(s, now)?),
    }
}

/// The window the arguments describe.
pub fn window(args: &Args, now: chrono::DateTime<Utc>) -> anyhow::Result<Window> {
    let since = args
        .since
        .as_deref()
        .map(|s| parse_time(s, now))
        .transpose()
        .context("--since")?;
    let until = match (&args.until, &args.before_date) {
        (Some(u), _) => Some(parse_time(u, now).context("--until")?),
        (None, Some(b)) => Some(search::parse_before_date(b).context("--before-date")?),
        (None, None) => None,
    };
    let since = match &args.elapsed_hours {
        Some(h) => {
            let d = search::parse_elapsed_hours(h).context("--elapsed-hours")?;
            until.unwrap_or(now).checked_sub_signed(d)
        }
        None => since,
    };
    // With --elapsed-hours alone the window ends now, as in the API.
    let until = match (&args.elapsed_hours, until) {
        (Some(_), None) => Some(now),
        (_, u) => u,
    };
    Ok(Window { since, until })
}

/// The filter the arguments describe.
pub fn filter(args: &Args) -> anyhow::Result<Filter> {
    let mut components = Vec::new();
    for c in &args.component {
        match Component::parse(c.trim()) {
            Some(c) => components.push(c),
            None => bail!(
                "--component: unknown component {c:?} (Engine, Portal, WebConsole, Console, Appliance)"
            ),
        }
    }
    Ok(Filter {
        codes: args.code.clone(),
        components,
        users: args.user.clone(),
        ..Filter::default()
    })
}

/// Writes one chunk of whole lines as JSON objects, one a line. A line that
/// is not a record is kept as `{"unparsed": "…"}` so nothing disappears.
fn write_json(out: &mut impl Write, chunk: &[u8]) -> io::Result<()> {
    for line in chunk.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if text.starts_with('{') && record::parse_json(&text).is_ok() {
            out.write_all(line)?;
            out.write_all(b"\n")?;
            continue;
        }
        let v = match record::parse_line(&text) {
            Ok(r) => r.to_json(),
            Err(_) => {
                let mut m = Map::new();
                m.insert("unparsed".into(), Value::String(text.into_owned()));
                Value::Object(m)
            }
        };
        serde_json::to_writer(&mut *out, &v)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A progress bar on stderr, only when it is a terminal and the plan is big.
struct ProgressReport {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressReport {
    fn new(enabled: bool, total: u64) -> ProgressReport {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "nxaudit query: {bytes}/{total_bytes} {wide_bar} {percent}% eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        ProgressReport { bar }
    }

    fn show(&mut self, p: search::Progress) {
        if let Some(b) = &self.bar {
            b.set_length(p.total.max(1));
            b.set_position(p.done.min(p.total));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Runs the subcommand; returns the exit code.
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<i32> {
    let window = window(args, Utc::now())?;
    if let (true, Some(since), Some(until)) = (window.is_empty(), window.since, window.until) {
        eprintln!(
            "nxaudit query: warning: empty window: --since {} is not before --until {}; nothing can match",
            record::format_ts(since),
            record::format_ts(until)
        );
    }
    let filter = filter(args)?;
    let dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| ctx.config.log_dir.clone());
    let search = Search::plan(&dir, window, filter)?;
    let mut progress = ProgressReport::new(
        !args.no_progress
            && io::stderr().is_terminal()
            && search.estimated_bytes() > PROGRESS_ABOVE,
        search.estimated_bytes(),
    );
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let json = args.json;
    let result = search.run_with_progress(&mut |p| progress.show(p), |chunk| {
        if json {
            write_json(&mut out, chunk)
        } else {
            out.write_all(chunk)
        }
    });
    progress.finish();
    let flushed = out.flush();
    match result {
        Ok(_) => {}
        // A closed pipe (`| head`) is a normal end.
        Err(search::SearchError::Sink(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(0),
        Err(e) => return Err(e.into()),
    }
    match flushed {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write results")),
        Ok(()) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(v: &[&str]) -> Args {
        let mut all = vec!["q"];
        all.extend_from_slice(v);
        Cli::try_parse_from(all).unwrap().args
    }

    fn t(s: &str) -> chrono::DateTime<Utc> {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn windows_like_the_api() {
        let now = t("2026-01-10T12:00:00Z");
        let w = window(
            &args(&["--before-date", "2026-01-01", "--elapsed-hours", "2"]),
            now,
        )
        .unwrap();
        assert_eq!(
            w,
            Window::from_api(Some("2026-01-01"), Some("2"), now).unwrap()
        );
        let w = window(&args(&["--elapsed-hours", "1.5"]), now).unwrap();
        assert_eq!(w, Window::from_api(None, Some("1.5"), now).unwrap());
        let w = window(&args(&["--since", "2h", "--until", "1h"]), now).unwrap();
        assert_eq!(
            w,
            Window {
                since: Some(t("2026-01-10T10:00:00Z")),
                until: Some(t("2026-01-10T11:00:00Z"))
            }
        );
        assert!(window(&args(&["--since", "banana"]), now).is_err());
        let w = window(&args(&["--since", "yesterday", "--until", "today"]), now).unwrap();
        assert_eq!(w.since, Some(t("2026-01-09T00:00:00Z")));
        assert_eq!(w.until, Some(t("2026-01-10T00:00:00Z")));
        for (arg, want) in [
            ("-2h", "2026-01-10T10:00:00Z"),
            ("2h ago", "2026-01-10T10:00:00Z"),
            ("now", "2026-01-10T12:00:00Z"),
            ("2026-01-02", "2026-01-02T00:00:00Z"),
        ] {
            assert_eq!(parse_time(arg, now).unwrap(), t(want), "{arg}");
        }
        let cli = Cli::try_parse_from(["q", "--since", "1h", "--elapsed-hours", "2"]);
        assert!(cli.is_err());
    }

    #[test]
    fn filters() {
        let f = filter(&args(&[
            "--code",
            "1,2",
            "--code",
            "3",
            "--component",
            "Console",
            "--user",
            "a",
        ]))
        .unwrap();
        assert_eq!(f.codes, vec![1, 2, 3]);
        assert_eq!(f.components, vec![Component::WebConsole]);
        assert_eq!(f.users, vec!["a".to_string()]);
        assert!(filter(&args(&["--component", "Nope"])).is_err());
    }

    #[test]
    fn json_output_keeps_unparsed_lines() {
        let mut out = Vec::new();
        write_json(&mut out, b"not a record\n").unwrap();
        assert_eq!(out, b"{\"unparsed\":\"not a record\"}\n");
    }
}
