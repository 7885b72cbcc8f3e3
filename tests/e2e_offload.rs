//! GSO super-frames through the appliance (issue 16): Linux peers with the kernel's default
//! offloads hand the appliance TCP frames of several KiB, and a bulk transfer through it must
//! arrive whole, in both directions, about as fast as through the kernel.
//!
//! ```text
//!  pod 198.18.0.11 ── br (bridge) ── tg-in 198.18.0.1 [app: tollgate run] tg-out 203.0.113.1
//!                                                                              │
//!  srv 198.51.100.10 ── MTU 1280 ── 198.51.100.1 [rtr: ip_forward=1] 203.0.113.254
//! ```
//! Every veth and the bridge keep the kernel's default offloads: nothing here runs ethtool,
//! and `tollgate run` is started without `--offloads-off`. The pod downloads a 50 MB random
//! file from the server (curl from python3's http.server) and uploads another one (curl -T to
//! a PUT receiver that writes the body to a file); sha256 compared both ways, each transfer
//! limited to 20 s (the kernel needs well under 1 s). First the kernel forwards in `app`
//! (ip_forward=1 + nftables masquerade to 203.0.113.1) as the baseline: if that fails, the
//! test's own plumbing is broken, and it says so. Then the same transfers through Tollgate with
//! 1 and 2 workers; its `tollgate stats` and exit counters (rx_oversize, rx_gso, tx_gso,
//! gso_segmented, ...) are printed. Needs root (skips otherwise); only the addresses above,
//! only in namespaces the test creates (prefix `tgo<pid>x<n>-`), all removed on every exit path.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::root_or_skip;

/// The tests share the machine's 2 CPUs badly: one topology at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Each transfer's size (50 MiB).
const SIZE: usize = 50 << 20;
/// curl's hard limit per transfer, seconds.
const LIMIT_SECS: u32 = 20;
/// Below 1 MB/s for 5 s, curl gives up early (a stalled transfer fails in 5 s, not 20).
const CURL_LIMITS: &str = "--speed-limit 1000000 --speed-time 5";

/// The HTTP server in `srv`: GET serves the directory, PUT writes the body to `put-<name>`.
const SERVER_PY: &str = r#"
import http.server, os, sys
root = sys.argv[1]

class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)

    def do_PUT(self):
        left = int(self.headers["Content-Length"])
        name = os.path.join(root, "put-" + os.path.basename(self.path))
        with open(name + ".part", "wb") as f:
            while left > 0:
                b = self.rfile.read(min(left, 1 << 20))
                if not b:
                    break
                f.write(b)
                left -= len(b)
        if left:
            sys.stderr.write("PUT %s: %d bytes missing\n" % (self.path, left))
            return
        os.rename(name + ".part", name)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

srv = http.server.ThreadingHTTPServer(("198.51.100.10", 8000), H)
print("listening", flush=True)
srv.serve_forever()
"#;

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The five namespaces, the processes started in them and the scratch directory; all of it is
/// removed when this drops (processes by their PID: SIGTERM, then SIGKILL).
struct Topo {
    prefix: String,
    dir: PathBuf,
    created: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Topo {
    fn ns(&self, short: &str) -> String {
        format!("{}{}", self.prefix, short)
    }

    /// `ip -n <ns> args...`; panics with ip's message when it fails (the guard cleans up).
    fn ip(&self, short: &str, args: &[&str]) {
        let ns = self.ns(short);
        let out = Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// `sh -c cmd` in a namespace: (success, stdout + stderr).
    fn sh(&self, short: &str, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(short), "sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Like [`Topo::sh`], and panics when the command fails.
    fn must(&self, short: &str, cmd: &str) -> String {
        let (ok, out) = self.sh(short, cmd);
        assert!(ok, "in {}: `{cmd}` failed: {out}", self.ns(short));
        out
    }

    /// Builds the topology (module comment); nothing runs yet.
    fn up() -> Topo {
        let prefix = format!(
            "tgo{}x{}-",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("tollgate-{}", prefix.trim_end_matches('-')));
        fs::create_dir_all(dir.join("srv")).expect("scratch dir");
        let mut t = Topo {
            prefix,
            dir,
            created: Vec::new(),
            children: Vec::new(),
        };
        for s in ["pod", "br", "app", "rtr", "srv"] {
            let n = t.ns(s);
            let ok = Command::new("ip")
                .args(["netns", "add", &n])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "ip netns add {n}");
            t.created.push(n);
            t.ip(s, &["link", "set", "lo", "up"]);
            t.sh(
                s,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        // a plain L2 switch, even where the host has br_netfilter
        t.sh(
            "br",
            "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
             net.bridge.bridge-nf-call-arptables=0 2>/dev/null",
        );
        t.ip("br", &["link", "add", "br0", "type", "bridge"]);
        t.ip("br", &["link", "set", "br0", "up"]);
        let (pod, app, rtr, srv) = (t.ns("pod"), t.ns("app"), t.ns("rtr"), t.ns("srv"));
        t.ip(
            "br",
            &[
                "link", "add", "p-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod,
            ],
        );
        t.ip(
            "br",
            &[
                "link", "add", "p-app", "type", "veth", "peer", "name", "tg-in", "netns", &app,
            ],
        );
        for p in ["p-pod", "p-app"] {
            t.ip("br", &["link", "set", p, "master", "br0", "up"]);
        }
        t.ip("pod", &["addr", "add", "198.18.0.11/24", "dev", "eth0"]);
        t.ip("pod", &["link", "set", "eth0", "up"]);
        t.ip("pod", &["route", "add", "default", "via", "198.18.0.1"]);
        t.ip(
            "app",
            &[
                "link", "add", "tg-out", "type", "veth", "peer", "name", "eth0", "netns", &rtr,
            ],
        );
        t.ip("app", &["addr", "add", "198.18.0.1/24", "dev", "tg-in"]);
        t.ip("app", &["addr", "add", "203.0.113.1/24", "dev", "tg-out"]);
        t.ip("app", &["link", "set", "tg-in", "up"]);
        t.ip("app", &["link", "set", "tg-out", "up"]);
        t.ip("app", &["route", "add", "default", "via", "203.0.113.254"]);
        t.ip(
            "rtr",
            &[
                "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &srv,
            ],
        );
        t.ip("rtr", &["addr", "add", "203.0.113.254/24", "dev", "eth0"]);
        t.ip("rtr", &["addr", "add", "198.51.100.1/24", "dev", "eth1"]);
        t.ip("rtr", &["link", "set", "eth1", "mtu", "1280"]);
        t.ip("rtr", &["link", "set", "eth0", "up"]);
        t.ip("rtr", &["link", "set", "eth1", "up"]);
        t.must("rtr", "sysctl -qw net.ipv4.ip_forward=1");
        t.ip("srv", &["addr", "add", "198.51.100.10/24", "dev", "eth0"]);
        t.ip("srv", &["link", "set", "eth0", "mtu", "1280"]);
        t.ip("srv", &["link", "set", "eth0", "up"]);
        t.ip("srv", &["route", "add", "default", "via", "198.51.100.1"]);
        t
    }

    /// Starts a long-running process in a namespace, its output to `log`.
    fn spawn(&mut self, label: &str, short: &str, args: &[&str], log: &Path) -> u32 {
        let f = fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(short)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log file"))
            .stderr(f)
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.children.push((label.to_string(), child));
        pid
    }

    /// SIGTERM to one child by its PID, SIGKILL after `grace`; true if it exited by itself.
    fn stop(&mut self, label: &str, grace: Duration) -> bool {
        let Some(i) = self.children.iter().position(|(l, _)| l == label) else {
            return false;
        };
        let (_, mut c) = self.children.remove(i);
        stop_child(&mut c, grace)
    }
}

fn stop_child(c: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = c.try_wait() {
        return true;
    }
    tollgate::control::lab::term_pid(c.id());
    let t0 = Instant::now();
    while t0.elapsed() < grace {
        if let Ok(Some(_)) = c.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    false
}

impl Drop for Topo {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain(..).rev() {
            stop_child(&mut c, Duration::from_millis(1500));
        }
        for n in self.created.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `log` contains `line`, or `timeout`; false when it did not.
fn wait_for_line(log: &Path, line: &str, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if fs::read_to_string(log).is_ok_and(|t| t.contains(line)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The sha256 of a file, in hex; empty when it cannot be read.
fn sha256(t: &Topo, path: &Path) -> String {
    let (ok, out) = t.sh("pod", &format!("sha256sum {}", path.display()));
    match out.split_whitespace().next() {
        Some(h) if ok && h.len() == 64 => h.to_string(),
        _ => String::new(),
    }
}

/// One transfer's outcome.
struct Transfer {
    what: &'static str,
    ok: bool,
    secs: f64,
    detail: String,
}

impl Transfer {
    fn line(&self, through: &str) -> String {
        format!(
            "{through}: {} of {} MiB: {} in {:.3} s{}",
            self.what,
            SIZE >> 20,
            if self.ok { "ok" } else { "FAILED" },
            self.secs,
            if self.ok {
                String::new()
            } else {
                format!(" ({})", self.detail.trim())
            }
        )
    }
}

/// curl's output on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The server's 50 MiB and the pod's 50 MiB of random bytes, with their sha256.
struct Files {
    blob_sha: String,
    up: PathBuf,
    up_sha: String,
}

fn make_files(t: &Topo) -> Files {
    let blob = t.dir.join("srv/blob.bin");
    let up = t.dir.join("up.bin");
    for p in [&blob, &up] {
        t.must(
            "pod",
            &format!(
                "head -c {SIZE} /dev/urandom > {} && test $(stat -c %s {}) = {SIZE}",
                p.display(),
                p.display()
            ),
        );
    }
    let (blob_sha, up_sha) = (sha256(t, &blob), sha256(t, &up));
    assert!(
        !blob_sha.is_empty() && !up_sha.is_empty(),
        "sha256sum failed"
    );
    Files {
        blob_sha,
        up_sha,
        up,
    }
}

/// Download server -> pod and upload pod -> server, each checked by its sha256.
fn transfers(t: &Topo, f: &Files) -> [Transfer; 2] {
    let down = t.dir.join("down.bin");
    let put = t.dir.join("srv/put-up.bin");
    let _ = fs::remove_file(&down);
    let _ = fs::remove_file(&put);
    let t0 = Instant::now();
    let (ok, out) = t.sh(
        "pod",
        &format!(
            "curl -sS -f -m {LIMIT_SECS} {CURL_LIMITS} -w 'got %{{size_download}} bytes; ' \
             -o {} http://198.51.100.10:8000/blob.bin",
            down.display()
        ),
    );
    let secs = t0.elapsed().as_secs_f64();
    let got = if ok { sha256(t, &down) } else { String::new() };
    let download = Transfer {
        what: "download server -> pod",
        ok: ok && got == f.blob_sha,
        secs,
        detail: format!("{}; sha256 {got:?}, want {}", one_line(&out), f.blob_sha),
    };
    let t0 = Instant::now();
    let (ok, out) = t.sh(
        "pod",
        &format!(
            "curl -sS -f -m {LIMIT_SECS} {CURL_LIMITS} -w 'sent %{{size_upload}} bytes; ' \
             -H 'Expect:' -T {} http://198.51.100.10:8000/up.bin",
            f.up.display()
        ),
    );
    let secs = t0.elapsed().as_secs_f64();
    let got = if ok { sha256(t, &put) } else { String::new() };
    let upload = Transfer {
        what: "upload pod -> server",
        ok: ok && got == f.up_sha,
        secs,
        detail: format!("{}; sha256 {got:?}, want {}", one_line(&out), f.up_sha),
    };
    let _ = fs::remove_file(&down);
    let _ = fs::remove_file(&put);
    [download, upload]
}

/// The topology with the server running and the test files made.
fn setup() -> (Topo, Files) {
    let mut t = Topo::up();
    let script = t.dir.join("server.py");
    fs::write(&script, SERVER_PY).expect("server script");
    let log = t.dir.join("server.log");
    let root = t.dir.join("srv");
    t.spawn(
        "server",
        "srv",
        &[
            "python3",
            "-u",
            &script.to_string_lossy(),
            &root.to_string_lossy(),
        ],
        &log,
    );
    let files = make_files(&t);
    assert!(
        wait_for_line(&log, "listening", Duration::from_secs(10)),
        "the HTTP server did not start: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    (t, files)
}

/// The baseline: the kernel forwards in `app` (ip_forward=1 + nftables masquerade), the same
/// transfers; then `app` is as before (forwarding off, the table gone).
fn kernel_baseline(t: &Topo, f: &Files) -> [Transfer; 2] {
    t.must(
        "app",
        "sysctl -qw net.ipv4.ip_forward=1 && nft -f - <<'EOF'
table ip tgoffload {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"tg-out\" masquerade
  }
}
EOF",
    );
    let r = transfers(t, f);
    t.must(
        "app",
        "nft delete table ip tgoffload && sysctl -qw net.ipv4.ip_forward=0",
    );
    r
}

/// `tollgate run`'s configuration: inside -> anywhere over TCP, SNAT to 203.0.113.1, the
/// router as the outside gateway (so also for 198.51.100.0/24).
const CONFIG: &str = r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]
icmp_source = "198.18.0.1"
management = "127.0.0.1:9090"

[[interface]]
name = "tg-in"
role = "inside"
addresses = ["198.18.0.1/24"]

[[interface]]
name = "tg-out"
role = "outside"
addresses = ["203.0.113.1/24"]
gateway = "203.0.113.254"

[snat]
addresses = ["203.0.113.1"]
ports = "1024-65535"

[[group]]
name = "offload"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "pods-anywhere-tcp"
    sources = ["198.18.0.0/15"]
    destinations = ["*"]
    protocols = ["tcp"]
    destination_ports = ["*"]
"#;

fn bulk_transfers_with_default_offloads(workers: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut t, files) = setup();
    let mut report = vec![format!(
        "topology {}{{pod,br,app,rtr,srv}}, default offloads, tollgate run --workers {workers}",
        t.prefix
    )];

    let kernel = kernel_baseline(&t, &files);
    for x in &kernel {
        report.push(x.line("kernel (ip_forward + masquerade)"));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        kernel.iter().all(|x| x.ok),
        "the kernel baseline failed: the test's own topology is broken, not the appliance:\n{}",
        report.join("\n")
    );

    let config = t.dir.join("tollgate.toml");
    fs::write(&config, CONFIG).expect("config");
    let log = t.dir.join("tollgate.log");
    let w = workers.to_string();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    t.spawn(
        "tollgate",
        "app",
        &[
            exe,
            "run",
            "--config",
            &config.to_string_lossy(),
            "--workers",
            &w,
        ],
        &log,
    );
    let ready = wait_for_line(
        &log,
        tollgate::control::notify::READY_LINE,
        Duration::from_secs(10),
    );
    assert!(
        ready,
        "tollgate run did not come up:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let through = transfers(&t, &files);
    for x in &through {
        report.push(x.line(&format!("tollgate, {workers} worker(s)")));
    }
    let (_, stats) = t.sh("app", &format!("{exe} stats"));
    let clean = t.stop("tollgate", Duration::from_secs(5));
    let text = fs::read_to_string(&log).unwrap_or_default();
    // the exit counters, without the JSON decision lines
    let counters: Vec<&str> = text.lines().filter(|l| !l.starts_with('{')).collect();
    // the ones that tell what became of the super-frames, on one line
    let key: Vec<&str> = counters
        .iter()
        .copied()
        .filter(|l| {
            [
                "forwarded ",
                "rx_oversize ",
                "rx_gso ",
                "tx_gso ",
                "gso_segmented ",
                "tx_errors ",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect();
    report.push(format!("tollgate exit counters: {}", key.join(", ")));
    eprintln!(
        "{}\n--- tollgate stats (before SIGTERM) ---\n{}\n--- tollgate run output ---\n{}",
        report[1 + kernel.len()..].join("\n"),
        stats.trim_end(),
        counters.join("\n")
    );
    assert!(
        through.iter().all(|x| x.ok),
        "transfers through tollgate failed:\n{}",
        report.join("\n")
    );
    assert!(clean, "tollgate run did not stop on SIGTERM");
}

#[test]
fn bulk_tcp_with_default_offloads_one_worker() {
    if !root_or_skip("bulk_tcp_with_default_offloads_one_worker") {
        return;
    }
    bulk_transfers_with_default_offloads(1);
}

#[test]
fn bulk_tcp_with_default_offloads_two_workers() {
    if !root_or_skip("bulk_tcp_with_default_offloads_two_workers") {
        return;
    }
    bulk_transfers_with_default_offloads(2);
}
