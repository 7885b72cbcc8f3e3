//! `tollgate lab ...` and `tollgate bench ...` reach the `tollgate-lab` binary beside the
//! appliance, arguments unchanged; without it, the appliance says how to get it.

use std::path::PathBuf;
use std::process::Command;

/// The appliance binary cargo built beside this crate's binary.
fn tollgate() -> PathBuf {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-lab"));
    let t = lab.with_file_name("tollgate");
    assert!(
        t.is_file(),
        "{} missing: build the workspace (cargo build --release --workspace)",
        t.display()
    );
    t
}

#[test]
fn lab_and_bench_run_through_the_appliance_binary() {
    let out = Command::new(tollgate())
        .args(["lab", "--help"])
        .env_remove("TOLLGATE_BIN")
        .output()
        .expect("run tollgate lab --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tollgate lab --help: {out:?}");
    assert!(text.contains("Usage: tollgate lab"), "{text}");
    assert!(text.contains("run"), "{text}");

    let out = Command::new(tollgate())
        .args(["bench", "snat", "--hosts", "2", "--rate", "10"])
        .args(["--conn-duration", "1", "--public-ips", "1", "--quiet"])
        .output()
        .expect("run tollgate bench snat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tollgate bench snat: {out:?}");
    assert!(text.contains("203.0.113.50:443"), "{text}");
}

#[test]
fn the_appliance_alone_says_where_the_lab_is() {
    let dir = std::env::temp_dir().join(format!("tollgate-alone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lone = dir.join("tollgate");
    std::fs::copy(tollgate(), &lone).unwrap();
    let out = Command::new(&lone)
        .args(["lab", "status"])
        .env("PATH", "")
        .output()
        .expect("run a lone tollgate");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(err.contains("tollgate-lab"), "{err}");
    assert!(err.contains("cargo build --release --workspace"), "{err}");
}
