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
    tollgate_lab::lab::term_pid(c.id());
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

// ---------------------------------------------------------------------------------------------
// Super-frames of other shapes through the same topology: UDP GSO (USO), the first payload of
// an inspected (application-rule) flow, and a DNAT'd inside server with replies handed between
// workers. Same namespaces, same helpers; each test's own `tollgate run` configuration.
// ---------------------------------------------------------------------------------------------

/// The part of every configuration below that is not rules (the same appliance as [`CONFIG`]).
const GSO_HEAD: &str = r#"
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
"#;

/// Fills the neighbour tables before the appliance starts (pod <-> app, app <-> rtr <-> srv),
/// so no UDP datagram waits on (or is lost to) address resolution.
fn warm_neighbours(t: &Topo) {
    t.sh("pod", "ping -c1 -W1 198.18.0.1");
    t.sh(
        "rtr",
        "ping -c1 -W1 203.0.113.1; ping -c1 -W1 198.51.100.10",
    );
}

/// Starts `tollgate run` in `app` with `config` and `workers`, waits for it to be ready; returns
/// its log.
fn start_tollgate(t: &mut Topo, config: &str, workers: usize, tag: &str) -> PathBuf {
    let cfg = t.dir.join(format!("{tag}.toml"));
    fs::write(&cfg, config).expect("config");
    let log = t.dir.join(format!("{tag}.log"));
    let w = workers.to_string();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    t.spawn(
        "tollgate",
        "app",
        &[
            exe,
            "run",
            "--config",
            &cfg.to_string_lossy(),
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
    log
}

/// What `tollgate run` left: `tollgate stats` just before SIGTERM, the exit counters and the
/// decision events (the JSON lines of its output).
struct TollgateExit {
    clean: bool,
    stats: String,
    counters: Vec<String>,
    events: Vec<String>,
}

impl TollgateExit {
    /// An exit counter by name; drop reasons (`drop.x`) are printed only when not zero.
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The counters that tell what became of the super-frames and of the flows, on one line.
    fn key(&self) -> String {
        const KEYS: [&str; 16] = [
            "forwarded",
            "replies",
            "held",
            "dropped",
            "flows",
            "handoff_out",
            "handoff_in",
            "handoff_full",
            "rx_oversize",
            "rx_gso",
            "tx_gso",
            "gso_segmented",
            "rx_csum_fixed",
            "rx_ring_drops",
            "tx_ring_full",
            "tx_errors",
        ];
        let mut v: Vec<String> = KEYS
            .iter()
            .map(|k| format!("{k} {}", self.counter(k)))
            .collect();
        v.extend(
            self.counters
                .iter()
                .filter(|l| l.starts_with("drop."))
                .cloned(),
        );
        v.join(", ")
    }
}

/// Reads `tollgate stats`, stops `tollgate run` (SIGTERM) and splits its output.
fn stop_tollgate(t: &mut Topo, log: &Path) -> TollgateExit {
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let (_, stats) = t.sh("app", &format!("{exe} stats"));
    let clean = t.stop("tollgate", Duration::from_secs(5));
    let text = fs::read_to_string(log).unwrap_or_default();
    let (events, counters): (Vec<String>, Vec<String>) = text
        .lines()
        .map(str::to_string)
        .partition(|l| l.starts_with('{'));
    TollgateExit {
        clean,
        stats,
        counters,
        events,
    }
}

/// Receives `argv[1]` UDP datagrams of `argv[2]` bytes on 198.51.100.10:9000 (each starts with
/// its index, big-endian u32), then prints how many came, how many had another size, were
/// repeated or out of order, and the sha256 of the distinct ones in index order. Gives up 3 s
/// after the last datagram (20 s before the first).
const USO_RECEIVER_PY: &str = r#"
import hashlib, socket, struct, sys
want, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE: nothing lost in the socket
s.bind(("198.51.100.10", 9000))
s.settimeout(20)
print("listening", flush=True)
got, bad, dup, reordered, last, sizes = {}, 0, 0, 0, -1, set()
try:
    while len(got) < want:
        d = s.recv(65536)
        s.settimeout(3)
        if len(d) != size:
            bad += 1
            sizes.add(len(d))
            continue
        i = struct.unpack("!I", d[:4])[0]
        if i in got:
            dup += 1
            continue
        if i < last:
            reordered += 1
        last = i
        got[i] = d
except socket.timeout:
    pass
h = hashlib.sha256()
for i in sorted(got):
    h.update(got[i])
print("result datagrams %d bad_size %d %s dup %d reordered %d sha256 %s"
      % (len(got), bad, sorted(sizes), dup, reordered, h.hexdigest()), flush=True)
"#;

/// Sends `argv[1]` sends of `argv[2]` datagrams of `argv[3]` bytes each to 198.51.100.10:9000
/// with UDP_SEGMENT (one send = one GSO super-frame), 2 ms apart; prints the sha256 of it all.
const USO_SENDER_PY: &str = r#"
import hashlib, os, socket, struct, sys, time
sends, per, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, size)  # UDP_SEGMENT
s.connect(("198.51.100.10", 9000))
h = hashlib.sha256()
for k in range(sends):
    buf = b"".join(struct.pack("!I", k * per + j) + os.urandom(size - 4) for j in range(per))
    h.update(buf)
    s.send(buf)
    time.sleep(0.002)
print("sent datagrams %d sha256 %s" % (sends * per, h.hexdigest()), flush=True)
"#;

/// UDP GSO (USO): a sender in the pod with `UDP_SEGMENT` 1200 makes super-frames of ten
/// 1200-byte datagrams (1228 bytes on the wire: they fit the 1280 hop whole); the receiver on
/// the server must get every datagram once, each 1200 bytes, the same bytes; the appliance must
/// have received super-frames whole and sent them on whole (`rx_gso`, `tx_gso`) on AF_PACKET,
/// and got them cut by the kernel on AF_XDP, with 1 and 2 workers.
#[test]
fn udp_gso_super_frames_arrive_as_their_datagrams() {
    if !root_or_skip("udp_gso_super_frames_arrive_as_their_datagrams") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const SENDS: usize = 300;
    const PER: usize = 10;
    const DGRAM: usize = 1200;
    let mut t = Topo::up();
    let rx_py = t.dir.join("uso_rx.py");
    let tx_py = t.dir.join("uso_tx.py");
    fs::write(&rx_py, USO_RECEIVER_PY).expect("receiver script");
    fs::write(&tx_py, USO_SENDER_PY).expect("sender script");
    let config = format!(
        r#"{GSO_HEAD}
[[group]]
name = "uso"
priority = 100

  [[group.collection]]
  name = "egress"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "pods-udp-9000"
    sources = ["198.18.0.0/15"]
    destinations = ["198.51.100.0/24"]
    protocols = ["udp"]
    destination_ports = ["9000"]
"#
    );
    warm_neighbours(&t);
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for workers in [1usize, 2] {
        let label = format!("uso-rx-{workers}");
        let rx_log = t.dir.join(format!("{label}.log"));
        let want = (SENDS * PER).to_string();
        let size = DGRAM.to_string();
        t.spawn(
            &label,
            "srv",
            &["python3", "-u", &rx_py.to_string_lossy(), &want, &size],
            &rx_log,
        );
        assert!(
            wait_for_line(&rx_log, "listening", Duration::from_secs(10)),
            "the UDP receiver did not start: {}",
            fs::read_to_string(&rx_log).unwrap_or_default()
        );
        let log = start_tollgate(&mut t, &config, workers, &format!("uso-{workers}"));
        let t0 = Instant::now();
        let (sent_ok, sent) = t.sh(
            "pod",
            &format!("python3 {} {SENDS} {PER} {DGRAM}", tx_py.display()),
        );
        let done = wait_for_line(&rx_log, "result ", Duration::from_secs(25));
        let secs = t0.elapsed().as_secs_f64();
        let exit = stop_tollgate(&mut t, &log);
        t.stop(&label, Duration::from_secs(1));
        let received = fs::read_to_string(&rx_log).unwrap_or_default();
        let result = received
            .lines()
            .find(|l| l.starts_with("result "))
            .unwrap_or("no result")
            .to_string();
        let sent_sha = sent
            .split_whitespace()
            .skip_while(|w| *w != "sha256")
            .nth(1)
            .unwrap_or("?")
            .to_string();
        let field = |name: &str| -> Option<String> {
            result
                .split_whitespace()
                .skip_while(|w| *w != name)
                .nth(1)
                .map(str::to_string)
        };
        let all = field("datagrams").as_deref() == Some(want.as_str());
        let same = field("sha256").as_deref() == Some(sent_sha.as_str());
        let sizes_ok = field("bad_size").as_deref() == Some("0");
        let (rx_gso, tx_gso) = (exit.counter("rx_gso"), exit.counter("tx_gso"));
        report.push(format!(
            "tollgate, {workers} worker(s): {SENDS} sends of {PER} x {DGRAM} bytes with \
             UDP_SEGMENT in {secs:.2} s\n  sender: {}\n  receiver: {result}\n  exit counters: {}",
            one_line(&sent),
            exit.key()
        ));
        eprintln!(
            "{}\n--- tollgate stats ({workers} worker(s), before SIGTERM) ---\n{}",
            report.last().expect("pushed"),
            exit.stats.trim_end()
        );
        let mut why = Vec::new();
        if !sent_ok || sent_sha.len() != 64 {
            why.push(format!("the sender failed: {}", one_line(&sent)));
        }
        if !done {
            why.push("the receiver printed no result".to_string());
        }
        if !all {
            why.push(format!("not every one of the {want} datagrams arrived"));
        }
        if !sizes_ok {
            why.push(format!("datagrams of another size than {DGRAM} arrived"));
        }
        if !same {
            why.push("the received bytes differ from the sent ones".to_string());
        }
        // AF_PACKET takes super-frames whole and sends them on whole. Under AF_XDP the kernel
        // cuts them before the XDP program (veth turns its peer's GSO off while a program is
        // attached; XDP sees what a NIC would put on the wire), so none arrives whole.
        let xdp = fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("backend=af_xdp(");
        if !xdp && (rx_gso == 0 || tx_gso == 0) {
            why.push(format!(
                "super-frames not carried whole: rx_gso {rx_gso}, tx_gso {tx_gso}"
            ));
        }
        if xdp && rx_gso != 0 {
            why.push(format!(
                "af_xdp received super-frames whole: rx_gso {rx_gso}"
            ));
        }
        if !exit.clean {
            why.push("tollgate run did not stop on SIGTERM".to_string());
        }
        if !why.is_empty() {
            failures.push(format!("{workers} worker(s): {}", why.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        report.join("\n")
    );
}

/// The server for the application-rule test: TLS on 198.51.100.10:443 (certificate `argv[1]`,
/// key `argv[2]`) and plain HTTP on :80, one handler: PUT reads the whole body and answers (and
/// logs) `<sha256> <bytes>`; GET answers `hello`. The TLS handshake runs in the request's
/// thread, so a reset handshake does not stop the server. No reverse DNS lookup of its own
/// address (`http.server`'s `getfqdn` would wait for the host's resolver, unreachable here).
const APP_SERVER_PY: &str = r#"
import hashlib, http.server, socketserver, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, b"hello\n")

    def do_PUT(self):
        left = int(self.headers["Content-Length"])
        h, n = hashlib.sha256(), 0
        while left > 0:
            b = self.rfile.read(min(left, 1 << 20))
            if not b:
                break
            h.update(b)
            n += len(b)
            left -= len(b)
        line = "%s %d" % (h.hexdigest(), n)
        print("PUT %s Host %s: %s" % (self.path, self.headers["Host"], line), flush=True)
        self.reply(200 if left == 0 else 400, (line + "\n").encode())

class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

class Tls(Server):
    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            request = ctx.wrap_socket(request, server_side=True)
        except OSError as e:
            print("TLS handshake from %s: %s" % (client_address, e), flush=True)
            return
        super().finish_request(request, client_address)

plain = Server(("198.51.100.10", 80), H)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls = Tls(("198.51.100.10", 443), H)
print("listening", flush=True)
tls.serve_forever()
"#;

/// A PUT of file `argv[1]` to http://198.51.100.10/ with `Host: allowed.example`, the request
/// line, headers and the first 256 KiB of the body in one `sendall`: the first payload the
/// application rules read leaves the pod as a GSO super-frame (TSO on the pod's veth). Prints
/// the server's answer.
const HOST_PUT_PY: &str = r#"
import os, socket, sys
path = sys.argv[1]
n = os.path.getsize(path)
s = socket.create_connection(("198.51.100.10", 80), timeout=20)
with open(path, "rb") as f:
    head = ("PUT /first-superframe.bin HTTP/1.1\r\nHost: allowed.example\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % n).encode()
    s.sendall(head + f.read(256 << 10))
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        s.sendall(b)
r = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    r += b
print(r.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip())
"#;

/// Application rules on a bulk upload: only `allowed.example` over `https:443` (and `http:80`)
/// is allowed, by name alone. A 20 MiB curl upload over TLS with SNI allowed.example must reach
/// the server whole (its sha256), a connection with SNI denied.example must be refused (reset,
/// nothing at the server), and a plain HTTP PUT whose first payload is a super-frame must be
/// read, allowed and arrive whole. The exit counters are printed (`gso_segmented` grows when a
/// first payload came as a super-frame; not asserted for curl: that depends on the client).
#[test]
fn application_rules_read_the_first_payload_of_a_bulk_upload() {
    if !root_or_skip("application_rules_read_the_first_payload_of_a_bulk_upload") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const UP: usize = 20 << 20;
    let mut t = Topo::up();
    let (cert, key) = (t.dir.join("cert.pem"), t.dir.join("key.pem"));
    t.must(
        "srv",
        &format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=allowed.example \
             -keyout {} -out {} 2>&1",
            key.display(),
            cert.display()
        ),
    );
    let up = t.dir.join("up20.bin");
    t.must(
        "pod",
        &format!(
            "head -c {UP} /dev/urandom > {} && test $(stat -c %s {}) = {UP}",
            up.display(),
            up.display()
        ),
    );
    let up_sha = sha256(&t, &up);
    assert_eq!(up_sha.len(), 64, "sha256sum failed");
    let server_py = t.dir.join("app_server.py");
    fs::write(&server_py, APP_SERVER_PY).expect("server script");
    let put_py = t.dir.join("host_put.py");
    fs::write(&put_py, HOST_PUT_PY).expect("client script");
    let server_log = t.dir.join("app_server.log");
    t.spawn(
        "app-server",
        "srv",
        &[
            "python3",
            "-u",
            &server_py.to_string_lossy(),
            &cert.to_string_lossy(),
            &key.to_string_lossy(),
        ],
        &server_log,
    );
    assert!(
        wait_for_line(&server_log, "listening", Duration::from_secs(10)),
        "the TLS server did not start: {}",
        fs::read_to_string(&server_log).unwrap_or_default()
    );
    warm_neighbours(&t);
    let config = format!(
        r#"{GSO_HEAD}
[[group]]
name = "apps"
priority = 100

  [[group.collection]]
  name = "names"
  priority = 100
  kind = "application"
  action = "allow"

    [[group.collection.rule]]
    name = "allowed-site"
    sources = ["198.18.0.0/15"]
    fqdns = ["allowed.example"]
    protocols = ["https:443", "http:80"]
"#
    );
    let log = start_tollgate(&mut t, &config, 1, "app-rules");

    let t0 = Instant::now();
    let (tls_ok, tls) = t.sh(
        "pod",
        &format!(
            "curl -sS -k -m {LIMIT_SECS} {CURL_LIMITS} -H 'Expect:' \
             --resolve allowed.example:443:198.51.100.10 -T {} \
             https://allowed.example/tls-upload.bin",
            up.display()
        ),
    );
    let tls_secs = t0.elapsed().as_secs_f64();
    let (denied_ok, denied) = t.sh(
        "pod",
        "curl -sS -k -m 5 --resolve denied.example:443:198.51.100.10 \
         https://denied.example/ 2>&1",
    );
    let t0 = Instant::now();
    let (host_ok, host) = t.sh(
        "pod",
        &format!("python3 {} {} 2>&1", put_py.display(), up.display()),
    );
    let host_secs = t0.elapsed().as_secs_f64();
    let exit = stop_tollgate(&mut t, &log);
    let served = fs::read_to_string(&server_log).unwrap_or_default();

    let want = format!("{up_sha} {UP}");
    let tls_whole = tls_ok && tls.trim() == want;
    let host_whole = host_ok && host.trim() == want;
    let denied_events: Vec<&String> = exit
        .events
        .iter()
        .filter(|e| e.contains("denied.example"))
        .collect();
    eprintln!(
        "application rules, tollgate run --workers 1, 20 MiB uploads:\n  \
         TLS (curl, SNI allowed.example): {} in {tls_secs:.2} s ({})\n  \
         TLS (curl, SNI denied.example): {} ({})\n  \
         HTTP PUT, Host allowed.example, first payload one sendall of headers + 256 KiB: \
         {} in {host_secs:.2} s ({})\n  \
         exit counters: {}\n  decision events for denied.example: {denied_events:?}\n\
         --- server log ---\n{}\n--- tollgate stats (before SIGTERM) ---\n{}",
        if tls_whole { "ok" } else { "FAILED" },
        one_line(&tls),
        if denied_ok { "NOT REFUSED" } else { "refused" },
        one_line(&denied),
        if host_whole { "ok" } else { "FAILED" },
        one_line(&host),
        exit.key(),
        served.trim_end(),
        exit.stats.trim_end()
    );
    assert!(
        tls_whole,
        "the TLS upload (SNI allowed.example) did not arrive whole: got {:?}, want {want:?}",
        tls.trim()
    );
    assert!(
        !denied_ok,
        "the connection with SNI denied.example was not refused: {denied}"
    );
    assert!(
        !served.contains("denied.example")
            && served.lines().filter(|l| l.starts_with("PUT ")).count() == 2,
        "the server saw requests it should not have: {served}"
    );
    assert!(
        exit.counter("drop.app_deny") >= 1,
        "the denied name is not counted as app_deny: {}",
        exit.key()
    );
    assert!(
        host_whole,
        "the HTTP PUT whose first payload was a super-frame did not arrive whole: got {:?}, \
         want {want:?}",
        host.trim()
    );
    assert!(exit.clean, "tollgate run did not stop on SIGTERM");
}

/// The pod's web server for the DNAT test: GET serves `argv[1]`, PUT reads the whole body and
/// answers `<sha256> <bytes>`; on 198.18.0.11:8080 (python3's http.server without the reverse
/// DNS lookup of its own address, which would wait for the host's resolver, unreachable here).
const POD_WEB_PY: &str = r#"
import functools, hashlib, http.server, socketserver, sys

class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

class H(http.server.SimpleHTTPRequestHandler):
    def do_PUT(self):
        left = int(self.headers["Content-Length"])
        h, n = hashlib.sha256(), 0
        while left > 0:
            b = self.rfile.read(min(left, 1 << 20))
            if not b:
                break
            h.update(b)
            n += len(b)
            left -= len(b)
        body = ("%s %d\n" % (h.hexdigest(), n)).encode()
        self.send_response(200 if left == 0 else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

srv = Server(("198.18.0.11", 8080), functools.partial(H, directory=sys.argv[1]))
print("listening", flush=True)
srv.serve_forever()
"#;

/// The DNAT tests' topology: the pod's web server (198.18.0.11:8080) running with a 50 MiB
/// file to serve, and a 20 MiB file for the outside server to upload, with their sha256.
struct DnatLab {
    t: Topo,
    blob_sha: String,
    up: PathBuf,
    up_sha: String,
}

/// The DNAT uploads' size (20 MiB).
const DNAT_UP: usize = 20 << 20;

fn dnat_setup() -> DnatLab {
    let mut t = Topo::up();
    let web = t.dir.join("web");
    fs::create_dir_all(&web).expect("web dir");
    let blob = web.join("blob.bin");
    let up = t.dir.join("dnat-up.bin");
    for (p, n) in [(&blob, SIZE), (&up, DNAT_UP)] {
        t.must(
            "pod",
            &format!(
                "head -c {n} /dev/urandom > {} && test $(stat -c %s {}) = {n}",
                p.display(),
                p.display()
            ),
        );
    }
    let (blob_sha, up_sha) = (sha256(&t, &blob), sha256(&t, &up));
    assert!(
        blob_sha.len() == 64 && up_sha.len() == 64,
        "sha256sum failed"
    );
    let web_log = t.dir.join("web.log");
    let web_py = t.dir.join("pod_web.py");
    fs::write(&web_py, POD_WEB_PY).expect("web server script");
    t.spawn(
        "pod-web",
        "pod",
        &[
            "python3",
            "-u",
            &web_py.to_string_lossy(),
            &web.to_string_lossy(),
        ],
        &web_log,
    );
    assert!(
        wait_for_line(&web_log, "listening", Duration::from_secs(10)),
        "the pod's web server did not start: {}",
        fs::read_to_string(&web_log).unwrap_or_default()
    );
    warm_neighbours(&t);
    DnatLab {
        t,
        blob_sha,
        up,
        up_sha,
    }
}

/// `tollgate run`'s configuration publishing the pod's web server on 203.0.113.1:`port`.
fn dnat_config(port: u16) -> String {
    format!(
        r#"{GSO_HEAD}
[[group]]
name = "publish"
priority = 100

  [[group.collection]]
  name = "inbound"
  priority = 100
  kind = "dnat"
  action = "allow"

    [[group.collection.rule]]
    name = "pod-web"
    sources = ["*"]
    destinations = ["203.0.113.1"]
    protocols = ["tcp"]
    destination_ports = ["{port}"]
    translated_address = "198.18.0.11"
    translated_port = 8080
"#
    )
}

/// Starts `tollgate run` publishing the pod's server on 203.0.113.1:`port` with `workers`; the
/// outside server downloads the 50 MiB file and uploads the 20 MiB one through it; stops it.
/// Returns what happened (printed as it goes) and what went wrong (empty when nothing did).
fn dnat_round(lab: &mut DnatLab, port: u16, workers: usize) -> (String, Vec<&'static str>) {
    // the SNAT range of GSO_HEAD, as the steering splits it between the workers
    let nat = tollgate::nat::NatConfig {
        port_min: 1024,
        port_max: 65535,
        ..tollgate::nat::NatConfig::default()
    };
    let owner = nat.owner_of_port(port, workers);
    let t = &mut lab.t;
    let log = start_tollgate(
        t,
        &dnat_config(port),
        workers,
        &format!("dnat-{port}-{workers}"),
    );
    let down = t.dir.join("dnat-down.bin");
    let _ = fs::remove_file(&down);
    let t0 = Instant::now();
    let (ok, out) = t.sh(
        "srv",
        &format!(
            "curl -sS -f -m {LIMIT_SECS} --connect-timeout 5 {CURL_LIMITS} \
             -w 'got %{{size_download}} bytes; ' -o {} http://203.0.113.1:{port}/blob.bin",
            down.display()
        ),
    );
    let down_secs = t0.elapsed().as_secs_f64();
    let got = if ok { sha256(t, &down) } else { String::new() };
    let _ = fs::remove_file(&down);
    let down_ok = ok && got == lab.blob_sha;
    let t0 = Instant::now();
    let (ok, answer) = t.sh(
        "srv",
        &format!(
            "curl -sS -f -m {LIMIT_SECS} --connect-timeout 5 {CURL_LIMITS} -H 'Expect:' -T {} \
             http://203.0.113.1:{port}/up.bin",
            lab.up.display()
        ),
    );
    let up_secs = t0.elapsed().as_secs_f64();
    let up_ok = ok && answer.trim() == format!("{} {DNAT_UP}", lab.up_sha);
    let exit = stop_tollgate(t, &log);
    let report = format!(
        "DNAT 203.0.113.1:{port} -> 198.18.0.11:8080 (the port is in the SNAT slice of worker \
         {owner:?}), tollgate run --workers {workers}:\n  \
         download of {} MiB by the outside server: {} in {down_secs:.2} s ({}; sha256 {got:?}, \
         want {})\n  \
         upload of {} MiB from the outside server: {} in {up_secs:.2} s (server: {}; want {} \
         {DNAT_UP})\n  exit counters: {}",
        SIZE >> 20,
        if down_ok { "ok" } else { "FAILED" },
        one_line(&out),
        lab.blob_sha,
        DNAT_UP >> 20,
        if up_ok { "ok" } else { "FAILED" },
        one_line(&answer),
        lab.up_sha,
        exit.key()
    );
    eprintln!(
        "{report}\n--- tollgate stats (port {port}, {workers} worker(s), before SIGTERM) ---\n{}",
        exit.stats.trim_end()
    );
    let mut why = Vec::new();
    if !down_ok {
        why.push("the download did not arrive whole");
    }
    if !up_ok {
        why.push("the upload did not arrive whole");
    }
    if !exit.clean {
        why.push("tollgate run did not stop on SIGTERM");
    }
    (report, why)
}

/// DNAT with super-frames: the pod's web server (198.18.0.11:8080) is published on the
/// appliance's 203.0.113.1:8080; the server namespace, outside, downloads a 50 MiB file from it
/// through the router (the pod's replies are super-frames, cut by the kernel for the 1280 hop)
/// and uploads a 20 MiB one (the router's super-frames reach the pod), sha256 compared, with 2
/// workers. DNAT flows live on worker 0; the hand-off and GSO counters are printed.
#[test]
fn dnat_download_with_super_frames() {
    if !root_or_skip("dnat_download_with_super_frames") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = dnat_setup();
    let (report, why) = dnat_round(&mut lab, 8080, 2);
    assert!(why.is_empty(), "{}\n{report}", why.join("; "));
}

/// The same DNAT transfers on a public port in the upper half of the SNAT range (48080 of
/// 1024-65535), which the steering gives to worker 1 of 2 (frames to a SNAT address go to the
/// owner of their destination port) while DNAT flows live on worker 0: every frame from outside
/// must be handed to worker 0 (a super-frame cut in software for the hand-off), and the inside
/// server's answers meet the flow there. With 1 worker (nothing to hand over) as the control.
#[test]
fn dnat_on_a_port_of_another_workers_snat_slice_with_super_frames() {
    if !root_or_skip("dnat_on_a_port_of_another_workers_snat_slice_with_super_frames") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = dnat_setup();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for workers in [1usize, 2] {
        let (report, why) = dnat_round(&mut lab, 48080, workers);
        if !why.is_empty() {
            failures.push(format!("{workers} worker(s): {}", why.join("; ")));
        }
        reports.push(report);
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        reports.join("\n")
    );
}
