//! Builds the XDP program of the AF_XDP backend (src/io/xdp/tollgate.bpf.c) with clang into
//! OUT_DIR, for `src/io/xdp.rs` to embed. Without clang the appliance still builds: the
//! backend then says at start that the program was not built, and `backend = "auto"` takes
//! AF_PACKET. `CLANG` names another compiler; `TOLLGATE_REQUIRE_XDP=1` makes a missing or
//! failing clang an error (CI and the README's commands set it).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/io/xdp/tollgate.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=TOLLGATE_REQUIRE_XDP");
    println!("cargo:rustc-check-cfg=cfg(tollgate_xdp)");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("tollgate.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch_inc = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    let r = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_inc}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .output();
    let err = match r {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-cfg=tollgate_xdp");
            return;
        }
        Ok(o) => format!(
            "{clang} failed on {src}:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("cannot run {clang} ({e}): install clang to build the XDP program"),
    };
    if std::env::var("TOLLGATE_REQUIRE_XDP").is_ok_and(|v| v == "1") {
        panic!("{err}");
    }
    println!("cargo:warning=AF_XDP backend left out: {err}");
}
