//! The daemon's diagnostic messages (start-up, warnings, reloads, DNS, exit counters): levels,
//! a filter from the command line or the environment, and three formats for stderr: `text`
//! (`tollgate: warning: ...`, what the daemon always printed), `journald` (a `<N>` syslog
//! priority on every line, no program name and no time: journald adds both) and `json` (one
//! object per line). The decision log is a separate stream (stdout, [`super::decision_log`]).
//!
//! Built on the `log` facade (no dependencies of its own) with this formatter, rather than
//! `tracing` and `tracing-subscriber`: see "The daemon's log" in docs/operability.md (sizes
//! and dependencies measured).
//!
//! Never on the packet path: the workers and the I/O layer do not log; what they have to say
//! they post to [`crate::io::IoNotices`], which a control thread logs ([`super::iowatch`]).

use std::fmt::{self, Write as _};
use std::io::Write;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::SystemTime;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// The filter's environment variable; `RUST_LOG` is read when it is unset.
pub const ENV_FILTER: &str = "TOLLGATE_LOG";
/// The format's environment variable (`auto`, `text`, `journald`, `json`).
pub const ENV_FORMAT: &str = "TOLLGATE_LOG_FORMAT";
/// The level of everything a filter does not name.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Info;

/// Which messages are written: a default level and levels for targets (module paths such as
/// `tollgate::control::dns`, matched with everything below them), in `RUST_LOG` syntax:
/// `warn`, `tollgate::control::dns=debug`, `info,tollgate::control::reload=trace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// Longest target first, so the first match is the most specific.
    targets: Vec<(String, LevelFilter)>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::level(DEFAULT_LEVEL)
    }
}

/// A level by name (`warning` is `warn`), for `--log-level`.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "warning" => Ok(LevelFilter::Warn),
        l => LevelFilter::from_str(l)
            .map_err(|_| format!("unknown level \"{s}\" (off, error, warn, info, debug, trace)")),
    }
}

impl Filter {
    /// Everything at `level` and above.
    pub fn level(level: LevelFilter) -> Self {
        Filter {
            default: level,
            targets: Vec::new(),
        }
    }

    /// Parses comma-separated directives: `LEVEL` sets the level of every target not named
    /// (the last one wins; [`DEFAULT_LEVEL`] without one), `TARGET=LEVEL` that of a target and
    /// what lies below it (`tollgate::control` covers `tollgate::control::dns`). Levels: off,
    /// error, warn, info, debug, trace (and `warning`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut f = Filter::default();
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if d.contains('/') {
                return Err(format!(
                    "\"{d}\": message filters (/regex) are not supported"
                ));
            }
            match d.split_once('=') {
                Some((t, l)) => {
                    let t = t.trim();
                    if !is_target(t) {
                        return Err(format!(
                            "\"{d}\": \"{t}\" is not a target (a module path: tollgate::control::dns)"
                        ));
                    }
                    f.set(t, parse_level(l.trim())?);
                }
                // a bare word is a level (RUST_LOG would take a bare target for
                // `TARGET=trace`, and a mistyped level with it)
                None => f.default = parse_level(d)?,
            }
        }
        Ok(f)
    }

    fn set(&mut self, target: &str, level: LevelFilter) {
        self.targets.retain(|(t, _)| t != target);
        self.targets.push((target.to_string(), level));
        self.targets
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// The level `target` is written at and above.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(t, _)| {
                target
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |&(_, l)| l)
    }

    /// Whether a message of `level` from `target` is written.
    pub fn enabled(&self, target: &str, level: Level) -> bool {
        level <= self.level_for(target)
    }

    /// The most verbose level any target is written at (what the `log` macros check first).
    pub fn max_level(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|&(_, l)| l)
            .fold(self.default, std::cmp::max)
    }
}

/// A module path: words of letters, digits and `_`, joined by `::`.
fn is_target(s: &str) -> bool {
    s.split("::")
        .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

impl FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Filter::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.default.as_str().to_ascii_lowercase())?;
        let mut t: Vec<_> = self.targets.iter().collect();
        t.sort();
        for (target, l) in t {
            write!(f, ",{target}={}", l.as_str().to_ascii_lowercase())?;
        }
        Ok(())
    }
}

/// How each message is written on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `tollgate: ` and, below info, the level (`warning: `, `error: `), then the message.
    Text,
    /// `<N>` (the syslog priority: 3 error, 4 warning, 6 info, 7 debug) on every line, then as
    /// `text` without `tollgate: `: journald reads the priority and adds the time and the
    /// program name itself.
    Journald,
    /// One JSON object per line: `time`, `level`, `target`, `message` and the fields.
    Json,
}

/// The `--log-format` choice: `auto` is `journald` when stderr is the journal (systemd says so
/// in `$JOURNAL_STREAM`), else `text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatChoice {
    Auto,
    Text,
    Journald,
    Json,
}

impl FromStr for FormatChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <FormatChoice as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown log format \"{s}\" (auto, text, journald, json)"))
    }
}

impl FormatChoice {
    /// The format, given whether stderr is the journal.
    pub fn resolve(self, stderr_is_journal: bool) -> Format {
        match self {
            FormatChoice::Auto if stderr_is_journal => Format::Journald,
            FormatChoice::Auto | FormatChoice::Text => Format::Text,
            FormatChoice::Journald => Format::Journald,
            FormatChoice::Json => Format::Json,
        }
    }
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd when it connects stdout or stderr
/// to the journal) names the file stderr is: a child whose stderr was redirected elsewhere
/// inherits the variable, so the variable alone is not enough.
pub fn journal_stream_is(journal_stream: &str, stderr: (u64, u64)) -> bool {
    journal_stream
        .trim()
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some(stderr)
}

/// The device and inode of this process's stderr.
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let m = std::fs::File::from(fd).metadata().ok()?;
    Some((m.dev(), m.ino()))
}

/// Whether stderr is connected to the journal.
pub fn stderr_is_journal() -> bool {
    match (std::env::var("JOURNAL_STREAM"), stderr_id()) {
        (Ok(js), Some(id)) => journal_stream_is(&js, id),
        _ => false,
    }
}

/// The filter and format settings, before they are applied: from the command line first, then
/// the environment.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--log-filter` or `--log-level`.
    pub filter: Option<Filter>,
    /// `--log-format`.
    pub format: Option<FormatChoice>,
}

/// What [`Settings::choose`] decided, with the problems found in the environment (to log once
/// the logger is up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub filter: Filter,
    pub format: Format,
    pub warnings: Vec<String>,
}

impl Settings {
    /// The filter: the command line's, else `$TOLLGATE_LOG`, else `$RUST_LOG`, else
    /// [`DEFAULT_LEVEL`] (an invalid variable is warned about and skipped). The format: the
    /// command line's, else `$TOLLGATE_LOG_FORMAT`, else `auto`. `env` reads a variable.
    pub fn choose(&self, env: impl Fn(&str) -> Option<String>, stderr_is_journal: bool) -> Chosen {
        let mut warnings = Vec::new();
        let filter = self.filter.clone().or_else(|| {
            [ENV_FILTER, "RUST_LOG"].iter().find_map(|var| {
                let spec = env(var)?;
                match Filter::parse(&spec) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        warnings.push(format!("${var} ignored: {e}"));
                        None
                    }
                }
            })
        });
        let format = self.format.or_else(|| {
            let s = env(ENV_FORMAT)?;
            s.parse()
                .map_err(|e| warnings.push(format!("${ENV_FORMAT} ignored: {e}")))
                .ok()
        });
        Chosen {
            filter: filter.unwrap_or_default(),
            format: format
                .unwrap_or(FormatChoice::Auto)
                .resolve(stderr_is_journal),
            warnings,
        }
    }
}

/// Installs the logger on stderr (once per process; later calls change nothing) and logs the
/// settings' warnings.
pub fn init(settings: &Settings) {
    let chosen = settings.choose(|v| std::env::var(v).ok(), stderr_is_journal());
    let (filter, format) = (chosen.filter.to_string(), chosen.format);
    let logger = Logger::new(chosen.filter, chosen.format, Box::new(std::io::stderr()));
    let max = logger.filter.max_level();
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    for w in chosen.warnings {
        log::warn!("{w}");
    }
    log::debug!("log filter {filter}, format {format:?}");
}

/// A `log` logger writing one record per `write` call (so lines of different threads never
/// mix) into `out`; write errors are ignored (a closed stderr must not stop the daemon).
pub struct Logger {
    filter: Filter,
    format: Format,
    out: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("filter", &self.filter)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Logger {
    pub fn new(filter: Filter, format: Format, out: Box<dyn Write + Send>) -> Self {
        Logger {
            filter,
            format,
            out: Mutex::new(out),
        }
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.filter.enabled(m.target(), m.level())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = render(self.format, record, SystemTime::now());
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }

    fn flush(&self) {
        let _ = self.out.lock().map(|mut o| o.flush());
    }
}

/// The word `text` puts before a message of `level` (none for info).
fn level_word(level: Level) -> &'static str {
    match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug => "debug: ",
        Level::Trace => "trace: ",
    }
}

/// The level as the JSON format names it.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The fields of a record as (key, value) text pairs, in order.
fn fields(record: &Record<'_>) -> Vec<(String, Field)> {
    struct Collect(Vec<(String, Field)>);
    impl<'kvs> VisitSource<'kvs> for Collect {
        fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), log::kv::Error> {
            self.0.push((k.as_str().to_string(), Field::of(&v)));
            Ok(())
        }
    }
    let mut c = Collect(Vec::new());
    let _ = record.key_values().visit(&mut c);
    c.0
}

/// A field's value, typed as JSON wants it.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
}

impl Field {
    fn of(v: &Value<'_>) -> Field {
        if let Some(n) = v.to_u64() {
            Field::U64(n)
        } else if let Some(n) = v.to_i64() {
            Field::I64(n)
        } else if let Some(b) = v.to_bool() {
            Field::Bool(b)
        } else if let Some(x) = v.to_f64().filter(|x| x.is_finite()) {
            Field::F64(x)
        } else {
            Field::Str(v.to_string())
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::U64(n) => write!(f, "{n}"),
            Field::I64(n) => write!(f, "{n}"),
            Field::F64(x) => write!(f, "{x}"),
            Field::Bool(b) => write!(f, "{b}"),
            Field::Str(s) => f.write_str(s),
        }
    }
}

/// Keys the JSON format writes itself: a field of that name is written as `field.NAME`.
const RESERVED: [&str; 4] = ["time", "level", "target", "message"];

/// One record in `format`, with its final newline. In `text` and `journald` a field is a line
/// of its own, `KEY VALUE`, after the message (the exit counters are written so).
pub fn render(format: Format, record: &Record<'_>, now: SystemTime) -> String {
    let mut out = String::new();
    match format {
        Format::Text | Format::Journald => {
            let mut body = String::new();
            if format == Format::Text {
                body.push_str("tollgate: ");
            }
            body.push_str(level_word(record.level()));
            let _ = write!(body, "{}", record.args());
            for (k, v) in fields(record) {
                let _ = write!(body, "\n{k} {v}");
            }
            if format == Format::Text {
                out = body;
                out.push('\n');
            } else {
                let p = syslog_priority(record.level());
                for l in body.lines() {
                    let _ = writeln!(out, "<{p}>{l}");
                }
            }
        }
        Format::Json => {
            let json = |s: &str| serde_json::Value::from(s).to_string();
            let _ = write!(
                out,
                "{{\"time\":\"{}\",\"level\":\"{}\",\"target\":{},\"message\":{}",
                super::decision_log::rfc3339(now),
                level_name(record.level()),
                json(record.target()),
                json(&record.args().to_string()),
            );
            for (k, v) in fields(record) {
                let k = if RESERVED.contains(&k.as_str()) {
                    format!("field.{k}")
                } else {
                    k
                };
                let v = match v {
                    Field::Str(s) => json(&s),
                    Field::F64(x) => serde_json::Value::from(x).to_string(),
                    other => other.to_string(),
                };
                let _ = write!(out, ",{}:{v}", json(&k));
            }
            out.push_str("}\n");
        }
    }
    out
}

/// Logs `message` at `level` with `fields` (names known only at run time, such as the exit
/// counters'), from `target`.
pub fn log_with_fields(
    level: Level,
    target: &str,
    message: fmt::Arguments<'_>,
    fields: &[(String, u64)],
) {
    if level > log::max_level() {
        return;
    }
    log::logger().log(
        &Record::builder()
            .level(level)
            .target(target)
            .args(message)
            .key_values(&fields)
            .build(),
    );
}

/// Logs a configuration warning (`FILE:LINE:COL: MESSAGE`, at warning level).
pub fn config_warning(d: &crate::config::Diagnostic) {
    log::warn!("{}:{}:{}: {}", d.origin, d.line, d.col, d.message);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn f(spec: &str) -> Filter {
        Filter::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    #[test]
    fn filters_parse_like_rust_log() {
        assert_eq!(Filter::default(), Filter::level(LevelFilter::Info));
        assert_eq!(f(""), Filter::default(), "empty: the default");
        assert_eq!(f("warn"), Filter::level(LevelFilter::Warn));
        assert_eq!(f(" WARNING "), Filter::level(LevelFilter::Warn));
        assert_eq!(
            f("debug,error"),
            Filter::level(LevelFilter::Error),
            "the last wins"
        );
        assert_eq!(f("off").max_level(), LevelFilter::Off);
        // a target keeps the default for the rest (RUST_LOG would turn the rest off)
        let d = f("tollgate::control::dns=debug");
        assert_eq!(d.level_for("tollgate::control::dns"), LevelFilter::Debug);
        assert_eq!(d.level_for("tollgate::control::reload"), LevelFilter::Info);
        assert_eq!(d.max_level(), LevelFilter::Debug);
        // the most specific target wins, whatever the order; prefixes stop at `::`
        let d = f("tollgate::control::dns=trace, tollgate::control=warn ,error");
        assert_eq!(d.level_for("tollgate::control::dns"), LevelFilter::Trace);
        assert_eq!(d.level_for("tollgate::control::dns::x"), LevelFilter::Trace);
        assert_eq!(d.level_for("tollgate::control::reload"), LevelFilter::Warn);
        assert_eq!(d.level_for("tollgate::controller"), LevelFilter::Error);
        assert_eq!(d.level_for("tollgate::cli::run"), LevelFilter::Error);
        assert!(d.enabled("tollgate::control::dns", Level::Trace));
        assert!(!d.enabled("tollgate::control::reload", Level::Info));
        assert!(d.enabled("tollgate::control::reload", Level::Warn));
        // the same target twice: the last
        assert_eq!(
            f("tollgate=debug,tollgate=warn").level_for("tollgate::cli"),
            LevelFilter::Warn
        );
        assert_eq!(
            f("warn,tollgate::control::dns=debug").to_string(),
            "warn,tollgate::control::dns=debug"
        );
        // a bare word must be a level: a mistyped one is not taken for a target
        for bad in [
            "loud",
            "wran",
            "tollgate::control::dns",
            "tollgate=loud",
            "=info",
            "tollgate/ready",
            "a-b=info",
            "a::=info",
            "x=1",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Filter::parse("loud")
            .unwrap_err()
            .contains("unknown level \"loud\""));
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_command_line_beats_tollgate_log_which_beats_rust_log() {
        let none = Settings::default();
        let c = none.choose(env(&[]), false);
        assert_eq!((c.filter, c.format), (Filter::default(), Format::Text));
        let c = none.choose(env(&[("RUST_LOG", "debug")]), false);
        assert_eq!(c.filter, Filter::level(LevelFilter::Debug));
        let both = [("RUST_LOG", "debug"), ("TOLLGATE_LOG", "warn")];
        assert_eq!(none.choose(env(&both), false).filter, f("warn"));
        let cli = Settings {
            filter: Some(f("error")),
            format: Some(FormatChoice::Json),
        };
        let c = cli.choose(env(&both), true);
        assert_eq!((c.filter, c.format), (f("error"), Format::Json));
        assert!(c.warnings.is_empty());
        // a broken variable is skipped, and said so
        let c = none.choose(
            env(&[("TOLLGATE_LOG", "loud"), ("RUST_LOG", "warn")]),
            false,
        );
        assert_eq!(c.filter, f("warn"));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("$TOLLGATE_LOG ignored: unknown level"));
        // the format: the command line, the variable, else auto
        let c = none.choose(env(&[("TOLLGATE_LOG_FORMAT", "json")]), true);
        assert_eq!(c.format, Format::Json);
        let c = none.choose(env(&[("TOLLGATE_LOG_FORMAT", "xml")]), true);
        assert_eq!(c.format, Format::Journald, "auto, under the journal");
        assert!(c.warnings[0].contains("unknown log format \"xml\""));
        let text = Settings {
            format: Some(FormatChoice::Text),
            ..Settings::default()
        };
        assert_eq!(text.choose(env(&[]), true).format, Format::Text);
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_is("8:123456", (8, 123456)));
        assert!(journal_stream_is("8:123456\n", (8, 123456)));
        assert!(!journal_stream_is("8:123457", (8, 123456)), "another file");
        assert!(!journal_stream_is("", (8, 123456)));
        assert!(!journal_stream_is("8", (8, 123456)));
        assert!(!journal_stream_is("x:y", (8, 123456)));
        assert_eq!(FormatChoice::Auto.resolve(true), Format::Journald);
        assert_eq!(FormatChoice::Auto.resolve(false), Format::Text);
        assert_eq!(FormatChoice::Json.resolve(true), Format::Json);
        // this process's own stderr: the variable naming it makes it the journal
        if let Some((dev, ino)) = stderr_id() {
            assert!(journal_stream_is(&format!("{dev}:{ino}"), (dev, ino)));
        }
    }

    /// Renders a record of `level` with `message` and `fields`.
    fn show(format: Format, level: Level, message: &str, fields: &[(String, u64)]) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        render(
            format,
            &Record::builder()
                .level(level)
                .target("tollgate::control::daemon")
                .args(format_args!("{message}"))
                .key_values(&fields)
                .build(),
            t,
        )
    }

    #[test]
    fn text_keeps_the_daemons_lines() {
        assert_eq!(
            show(
                Format::Text,
                Level::Info,
                "running interfaces=tg-in(inside)",
                &[]
            ),
            "tollgate: running interfaces=tg-in(inside)\n"
        );
        assert_eq!(
            show(Format::Text, Level::Warn, "no admin socket: busy", &[]),
            "tollgate: warning: no admin socket: busy\n"
        );
        assert_eq!(
            show(
                Format::Text,
                Level::Error,
                "reload: t.toml rejected\n  t.toml:1:2: error: x",
                &[]
            ),
            "tollgate: error: reload: t.toml rejected\n  t.toml:1:2: error: x\n"
        );
        assert_eq!(
            show(Format::Text, Level::Debug, "d", &[]),
            "tollgate: debug: d\n"
        );
        let counters = [
            ("rx_packets".to_string(), 3),
            ("drop.rule_deny".to_string(), 1),
        ];
        assert_eq!(
            show(Format::Text, Level::Info, "counters at exit", &counters),
            "tollgate: counters at exit\nrx_packets 3\ndrop.rule_deny 1\n"
        );
        // the ready line the lab and the tests wait for
        assert_eq!(
            show(
                Format::Text,
                Level::Info,
                super::super::notify::READY_MESSAGE,
                &[]
            ),
            format!("{}\n", super::super::notify::READY_LINE)
        );
    }

    #[test]
    fn journald_lines_carry_their_priority_and_no_time() {
        assert_eq!(
            show(
                Format::Journald,
                Level::Info,
                "running interfaces=tg-in(inside)",
                &[]
            ),
            "<6>running interfaces=tg-in(inside)\n"
        );
        assert_eq!(
            show(
                Format::Journald,
                Level::Warn,
                "interface tg-in: Network is down",
                &[]
            ),
            "<4>warning: interface tg-in: Network is down\n"
        );
        // every line of a message is a journal entry of its own: each has the priority
        assert_eq!(
            show(
                Format::Journald,
                Level::Error,
                "reload: t.toml rejected\n  t.toml:1:2: error: x",
                &[]
            ),
            "<3>error: reload: t.toml rejected\n<3>  t.toml:1:2: error: x\n"
        );
        assert_eq!(
            show(Format::Journald, Level::Debug, "d", &[]),
            "<7>debug: d\n"
        );
        assert_eq!(
            show(Format::Journald, Level::Trace, "t", &[]),
            "<7>trace: t\n"
        );
        let counters = [("flows".to_string(), 2)];
        assert_eq!(
            show(Format::Journald, Level::Info, "counters at exit", &counters),
            "<6>counters at exit\n<6>flows 2\n"
        );
    }

    #[test]
    fn json_is_one_object_per_line_with_time_level_target_and_message() {
        let line = show(
            Format::Json,
            Level::Warn,
            "reload: \"t.toml\" rejected\n  t.toml:1:2: error: x",
            &[],
        );
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        assert!(line.starts_with("{\"time\":\"2026-11-18T"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "tollgate::control::daemon");
        assert_eq!(
            v["message"],
            "reload: \"t.toml\" rejected\n  t.toml:1:2: error: x"
        );
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        for (l, name) in [
            (Level::Error, "error"),
            (Level::Info, "info"),
            (Level::Debug, "debug"),
            (Level::Trace, "trace"),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&show(Format::Json, l, "m", &[])).expect("JSON");
            assert_eq!(v["level"], name);
        }
        // fields are numbers at the top level; one named like a key of the line is renamed
        let fields = [("rx_packets".to_string(), 3), ("level".to_string(), 9)];
        let v: serde_json::Value = serde_json::from_str(&show(
            Format::Json,
            Level::Info,
            "counters at exit",
            &fields,
        ))
        .expect("JSON");
        assert_eq!(v["rx_packets"], 3);
        assert_eq!(v["level"], "info");
        assert_eq!(v["field.level"], 9);
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_logger_filters_and_writes_whole_records() {
        let buf = Buf::default();
        let logger = Logger::new(
            f("warn,tollgate::control::dns=debug"),
            Format::Json,
            Box::new(buf.clone()),
        );
        let rec = |level, target: &'static str, msg: &'static str| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .args(format_args!("{msg}"))
                    .build(),
            )
        };
        rec(
            Level::Info,
            "tollgate::control::daemon",
            "dropped: info under warn",
        );
        rec(Level::Warn, "tollgate::control::daemon", "kept");
        rec(
            Level::Debug,
            "tollgate::control::dns",
            "kept: debug for dns",
        );
        rec(Level::Trace, "tollgate::control::dns", "dropped: trace");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "kept");
        assert_eq!(lines[1]["level"], "debug");
        assert!(logger.enabled(&Metadata::builder().level(Level::Warn).target("x").build()));
        assert!(!logger.enabled(&Metadata::builder().level(Level::Info).target("x").build()));
    }

    /// The packet path neither logs nor prints: the workers' code (datapath, connection
    /// tracking, NAT, wire formats, the compiled policy) and the I/O layer they run on do not
    /// name the logging crate nor write to stdout or stderr. What the I/O layer has to say goes
    /// through [`crate::io::IoNotices`].
    #[test]
    fn the_packet_path_does_not_log() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut seen = 0;
        let mut bad = Vec::new();
        let mut dirs: Vec<_> = ["datapath", "conntrack", "nat", "wire", "policy", "io"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("source directory") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                if p.extension() != Some("rs".as_ref()) {
                    continue;
                }
                seen += 1;
                let text = std::fs::read_to_string(&p).expect("source");
                for (n, l) in text.lines().enumerate() {
                    let code = l.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    for word in [
                        "log::",
                        "info!(",
                        "warn!(",
                        "error!(",
                        "debug!(",
                        "trace!(",
                        "eprint",
                        "println!(",
                        "print!(",
                        "stderr()",
                        "stdout()",
                        "dbg!(",
                    ] {
                        if code.contains(word) {
                            bad.push(format!("{}:{}: {l}", p.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(seen > 30, "only {seen} files read");
        assert!(
            bad.is_empty(),
            "the packet path logs or prints:\n{}",
            bad.join("\n")
        );
    }
}
