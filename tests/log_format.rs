//! `tollgate run`'s log settings as a process, without root: a configuration that does not load
//! stops the daemon with one error, written as the settings say (JSON, journald when stderr is
//! the journal, text otherwise, nothing under `off`). The daemon's lines while it runs are
//! checked by `tests/e2e_log.rs`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A scratch directory for this test process.
fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-log-format-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs `tollgate run --config CONFIG ARGS...` with stderr into a file and `env` set (and no
/// other log setting from this environment; `{stderr}` in a value is stderr's dev:ino);
/// returns (exit code, stderr).
fn run(name: &str, config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let err = dir().join(format!("{name}.stderr"));
    let f = std::fs::File::create(&err).expect("stderr file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["run", "--config"])
        .arg(config)
        .args(args)
        .env_remove("TOLLGATE_LOG")
        .env_remove("TOLLGATE_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f);
    for (k, v) in env {
        let v = v.replace("{stderr}", &journal_stream_of(&err));
        cmd.env(k, v);
    }
    let status = cmd.status().expect("run tollgate");
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&err).expect("stderr"),
    )
}

/// `DEVICE:INODE` of a file, as systemd writes `$JOURNAL_STREAM`.
fn journal_stream_of(p: &Path) -> String {
    let m = std::fs::metadata(p).expect("metadata");
    format!("{}:{}", m.dev(), m.ino())
}

fn broken_config() -> PathBuf {
    let p = dir().join("broken.toml");
    std::fs::write(&p, "[appliance\nworkers = 1\n").expect("write config");
    p
}

#[test]
fn a_failed_start_is_one_json_line_with_level_and_message() {
    let missing = dir().join("missing.toml");
    let (code, err) = run("json", &missing, &["--log-format", "json"], &[]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(v["level"], "error", "{v}");
    assert_eq!(v["target"], "tollgate::cli::run", "{v}");
    assert!(
        v["message"].as_str().is_some_and(
            |m| m.starts_with("cannot load the configuration: ") && m.contains("missing.toml")
        ),
        "{v}"
    );
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    // the variable does the same
    let (_, err) = run(
        "json-env",
        &missing,
        &[],
        &[("TOLLGATE_LOG_FORMAT", "json")],
    );
    assert!(err.starts_with("{\"time\":"), "{err}");
}

#[test]
fn under_the_journal_every_line_has_its_priority_and_elsewhere_the_text_is_plain() {
    let config = broken_config();
    // stderr is the journal's stream: `<3>` (error) on every line, no `tollgate: `, no time
    let (code, err) = run("journal", &config, &[], &[("JOURNAL_STREAM", "{stderr}")]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() >= 2,
        "the errors follow on lines of their own: {err}"
    );
    assert!(
        lines[0].starts_with("<3>error: cannot load the configuration: "),
        "{err}"
    );
    assert!(lines.iter().all(|l| l.starts_with("<3>")), "{err}");
    assert!(
        lines[1..].iter().any(|l| l.contains("broken.toml:1:")),
        "{err}"
    );
    // the variable inherited by a process whose stderr goes elsewhere: plain text
    let (_, err) = run("not-journal", &config, &[], &[("JOURNAL_STREAM", "1:1")]);
    assert!(
        err.starts_with("tollgate: error: cannot load the configuration: "),
        "{err}"
    );
    assert!(!err.contains("<3>"), "{err}");
    // --log-format text wins over the journal
    let (_, err) = run(
        "journal-text",
        &config,
        &["--log-format", "text"],
        &[("JOURNAL_STREAM", "{stderr}")],
    );
    assert!(err.starts_with("tollgate: error: "), "{err}");
}

#[test]
fn the_filter_comes_from_the_command_line_or_the_environment() {
    let config = broken_config();
    let (code, err) = run("off", &config, &["--log-level", "off"], &[]);
    assert_eq!(
        (code, err.as_str()),
        (1, ""),
        "off: nothing, the exit code still says"
    );
    let (_, err) = run("env-off", &config, &[], &[("TOLLGATE_LOG", "off")]);
    assert_eq!(err, "");
    let (_, err) = run("rust-log-off", &config, &[], &[("RUST_LOG", "off")]);
    assert_eq!(err, "");
    // the command line beats the environment
    let (_, err) = run(
        "cli-wins",
        &config,
        &["--log-filter", "error"],
        &[("TOLLGATE_LOG", "off")],
    );
    assert!(err.starts_with("tollgate: error: "), "{err}");
    // a broken variable is skipped with a warning; the default level stays
    let (_, err) = run("env-bad", &config, &[], &[("TOLLGATE_LOG", "loud")]);
    assert!(
        err.starts_with("tollgate: warning: $TOLLGATE_LOG ignored: unknown level \"loud\""),
        "{err}"
    );
    assert!(
        err.contains("tollgate: error: cannot load the configuration"),
        "{err}"
    );
    // a broken command line is a usage error
    let (code, err) = run("cli-bad", &config, &["--log-level", "loud"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--log-level"), "{err}");
}
