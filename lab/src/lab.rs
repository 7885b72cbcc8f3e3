//! The network-namespace lab (`tollgate lab up|down|status|run`): the seeds' scenario, AKS
//! egress through a UDR to an appliance, in namespaces with a unique per-run prefix.
//!
//! ```text
//!  node1 198.18.0.11 ─┐                                        ┌─ internet: 203.0.113.10 (HTTP :80,
//!  node2 198.18.0.12 ─┼─ sw (bridge) ── tg-in 198.18.0.1       │    UDP echo :7, TLS :443, iperf3)
//!  srv   198.18.0.20 ─┘   appliance   tg-out 203.0.113.1 ──────┤  203.0.113.254 (gateway)
//!  (default route = 198.18.0.1: the UDR)                       └─ 198.51.100.66 (denied by policy)
//! ```
//! The internet namespace has no route back to 198.18.0.0/15: only SNATed traffic gets answers.
//! Only the addresses above, only in namespaces the lab creates; every child process is
//! started by the lab and stopped by its PID; namespaces are removed on every exit path
//! ([`Lab`] tears down on drop).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::fabric::Topology;

/// Short names of the two-arm lab's namespaces (the full name is prefix + short name); see
/// [`Topology::namespaces`] for every shape's.
pub const NAMESPACES: &[&str] = &["sw", "node1", "node2", "srv", "app", "inet"];

/// Every short name any shape uses, for `lab down` of labs recorded before states named them.
const ALL_NAMESPACES: &[&str] = &["sw", "fab", "node1", "node2", "srv", "pod1", "app", "inet"];

/// Where `lab up` records what `lab down` must remove.
pub const STATE_DIR: &str = "/run/tollgate-lab";

/// Why the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab must run as root (it creates network namespaces)")]
    NotRoot,
    #[error("a tool the lab needs is missing: {0} (install it with apt-get)")]
    Missing(&'static str),
    #[error("lab setup failed at `{cmd}`: {stderr}")]
    Setup { cmd: String, stderr: String },
    #[error("lab I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("the appliance did not come up: {0}")]
    Appliance(String),
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix `tg<pid>x<n>-`, unique per process and call.
pub fn new_prefix() -> String {
    format!(
        "tg{}x{}-",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn run_cmd(args: &[&str]) -> Result<Output, LabError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(LabError::Setup {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A running lab; everything it created is removed when it drops (unless [`Lab::detach`]ed).
#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    /// The shape: two-arm, or Azure's one-arm NVA in an emulated fabric.
    pub topology: Topology,
    /// Scratch directory: server logs, certificate, appliance log.
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    /// Where each child's output goes, by label.
    logs: Vec<(String, PathBuf)>,
    created: Vec<String>,
    detached: bool,
}

impl Lab {
    /// Full namespace name of `short` (one of [`NAMESPACES`]).
    pub fn ns(&self, short: &str) -> String {
        format!("{}{}", self.prefix, short)
    }

    /// Checks the tools and creates the two-arm topology (no processes yet).
    pub fn up(prefix: &str) -> Result<Lab, LabError> {
        Lab::up_with(prefix, Topology::TwoArm)
    }

    /// Checks the tools and creates `topology` (no processes yet).
    pub fn up_with(prefix: &str, topology: Topology) -> Result<Lab, LabError> {
        if !tollgate::control::host::is_root() {
            return Err(LabError::NotRoot);
        }
        for tool in ["ip", "nft", "python3", "curl", "ping"] {
            let ok = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(LabError::Missing(tool));
            }
        }
        let dir =
            std::env::temp_dir().join(format!("tollgate-lab-{}", prefix.trim_end_matches('-')));
        fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            topology,
            dir,
            children: Vec::new(),
            logs: Vec::new(),
            created: Vec::new(),
            detached: false,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        for s in self.topology.namespaces() {
            let n = self.ns(s);
            run_cmd(&["ip", "netns", "add", &n])?;
            self.created.push(n.clone());
            self.ip(s, &["link", "set", "lo", "up"])?;
            // IPv6 off: no router solicitations or DAD noise in the counters.
            let _ = self.sh(
                s,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        if self.topology != Topology::TwoArm {
            return crate::fabric::build_fabric(self);
        }
        // The host may have br_netfilter: keep the lab's bridge a plain L2 switch (it would
        // otherwise validate and drop malformed IPv4 before the appliance sees it).
        let _ = self.sh(
            "sw",
            "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null",
        );
        self.ip("sw", &["link", "add", "br0", "type", "bridge"])?;
        self.ip("sw", &["link", "set", "br0", "up"])?;
        for (host, port, addr) in [
            ("node1", "p-node1", "198.18.0.11/24"),
            ("node2", "p-node2", "198.18.0.12/24"),
            ("srv", "p-srv", "198.18.0.20/24"),
        ] {
            let hn = self.ns(host);
            self.ip(
                "sw",
                &[
                    "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &hn,
                ],
            )?;
            self.ip("sw", &["link", "set", port, "master", "br0", "up"])?;
            self.ip(host, &["addr", "add", addr, "dev", "eth0"])?;
            self.ip(host, &["link", "set", "eth0", "up"])?;
            // the UDR: the default route is the appliance's inside address
            self.ip(host, &["route", "add", "default", "via", "198.18.0.1"])?;
        }
        let app = self.ns("app");
        self.ip(
            "sw",
            &[
                "link", "add", "p-app", "type", "veth", "peer", "name", "tg-in", "netns", &app,
            ],
        )?;
        self.ip("sw", &["link", "set", "p-app", "master", "br0", "up"])?;
        self.ip(
            "inet",
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "tg-out", "netns", &app,
            ],
        )?;
        self.ip("app", &["addr", "add", "198.18.0.1/24", "dev", "tg-in"])?;
        self.ip("app", &["addr", "add", "203.0.113.1/24", "dev", "tg-out"])?;
        self.ip("app", &["link", "set", "tg-in", "up"])?;
        self.ip("app", &["link", "set", "tg-out", "up"])?;
        self.ip("app", &["route", "add", "default", "via", "203.0.113.254"])?;
        for a in [
            "203.0.113.10/24",
            "203.0.113.254/24",
            "198.51.100.66/24",
            "203.0.113.53/24",
        ] {
            self.ip("inet", &["addr", "add", a, "dev", "eth0"])?;
        }
        self.ip("inet", &["link", "set", "eth0", "up"])?;
        // Every interface keeps the kernel's default offloads (TSO/GSO on the veths, GRO where
        // the kernel turns it on): the hosts hand the appliance GSO super-frames, as real Linux
        // peers do, and the appliance must take them as they come.
        Ok(())
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, short: &str, args: &[&str]) -> Result<Output, LabError> {
        let n = self.ns(short);
        let mut v = vec!["ip", "-n", n.as_str()];
        v.extend_from_slice(args);
        run_cmd(&v)
    }

    /// Runs a shell command in a namespace; an error unless it succeeds.
    pub fn sh_ok(&self, short: &str, cmd: &str) -> Result<Output, LabError> {
        let out = self.sh(short, cmd)?;
        if !out.status.success() {
            return Err(LabError::Setup {
                cmd: format!("{}: {cmd}", self.ns(short)),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out)
    }

    /// Loads an nftables ruleset into a namespace (`nft -f -`).
    pub fn nft(&self, short: &str, ruleset: &str) -> Result<(), LabError> {
        use std::io::Write as _;
        let n = self.ns(short);
        let mut c = Command::new("ip")
            .args(["netns", "exec", &n, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut i) = c.stdin.take() {
            i.write_all(ruleset.as_bytes())?;
        }
        let out = c.wait_with_output()?;
        if !out.status.success() {
            return Err(LabError::Setup {
                cmd: format!("{n}: nft -f -"),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Runs a shell command in a namespace and returns its output (whatever the exit status).
    pub fn sh(&self, short: &str, cmd: &str) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(short), "sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
    }

    /// Starts a long-running process in a namespace, output to `log`; returns its PID. The
    /// log settings of the caller's environment are not passed on: an appliance started here
    /// logs at the default level and format (its log is read for the ready line), unless its
    /// arguments say otherwise.
    pub fn spawn(
        &mut self,
        label: &str,
        short: &str,
        args: &[&str],
        log: &Path,
    ) -> io::Result<u32> {
        let f = fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(short)])
            .args(args)
            .env_remove(tollgate::control::logging::ENV_FILTER)
            .env_remove("RUST_LOG")
            .env_remove(tollgate::control::logging::ENV_FORMAT)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()?;
        let pid = child.id();
        self.children.push((label.to_string(), child));
        self.logs.retain(|(l, _)| l != label);
        self.logs.push((label.to_string(), log.to_path_buf()));
        Ok(pid)
    }

    /// PIDs of the processes the lab started: (label, pid).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|(l, c)| (l.clone(), c.id()))
            .collect()
    }

    /// Stops one child: SIGTERM by PID, then SIGKILL after `grace`; returns whether it exited
    /// by itself.
    pub fn stop(&mut self, label: &str, grace: Duration) -> bool {
        let Some(i) = self.children.iter().position(|(l, _)| l == label) else {
            return false;
        };
        let (_, mut c) = self.children.remove(i);
        stop_child(&mut c, grace)
    }

    /// Waits up to `timeout` for one child to exit by itself; its exit status if it did (the
    /// child is then forgotten), None if it still runs.
    pub fn wait_exit(
        &mut self,
        label: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        loop {
            let i = self.children.iter().position(|(l, _)| l == label)?;
            if let Ok(Some(status)) = self.children[i].1.try_wait() {
                self.children.remove(i);
                return Some(status);
            }
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the server script and certificate and starts the servers: HTTP + UDP echo in
    /// `inet` (port 80, 7) and `srv` (port 80), TLS (443) and iperf3 in `inet`.
    pub fn start_servers(&mut self) -> Result<(), LabError> {
        let script = self.dir.join("servers.py");
        fs::write(&script, SERVERS_PY)?;
        let s = script.to_string_lossy().to_string();
        let log = self.dir.join("inet-servers.log");
        self.spawn("inet-servers", "inet", &["python3", "-u", &s], &log)?;
        let log = self.dir.join("srv-servers.log");
        self.spawn("srv-servers", "srv", &["python3", "-u", &s], &log)?;
        let zone = self.dns_zone_path();
        fs::write(&zone, DNS_ZONE)?;
        let dns = self.dir.join("dns.py");
        fs::write(&dns, DNS_PY)?;
        let log = self.dir.join("dns.log");
        self.spawn(
            "dns",
            "inet",
            &[
                "python3",
                "-u",
                &dns.to_string_lossy(),
                &zone.to_string_lossy(),
            ],
            &log,
        )?;
        if self.topology != Topology::TwoArm {
            // The platform's DNS (Azure: 168.63.129.16), the appliance's resolver.
            let log = self.dir.join("platform-dns.log");
            self.spawn(
                "platform-dns",
                "fab",
                &[
                    "python3",
                    "-u",
                    &dns.to_string_lossy(),
                    &zone.to_string_lossy(),
                    crate::fabric::PLATFORM,
                ],
                &log,
            )?;
        }
        if which("iperf3") {
            let log = self.dir.join("iperf3.log");
            self.spawn("iperf3", "inet", &["iperf3", "-s", "-p", "5201"], &log)?;
        }
        if which("openssl") {
            let key = self.dir.join("key.pem").to_string_lossy().to_string();
            let cert = self.dir.join("cert.pem").to_string_lossy().to_string();
            let gen = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=allowed.example",
                    "-addext",
                    "subjectAltName=DNS:allowed.example,DNS:denied.example",
                    "-keyout",
                    &key,
                    "-out",
                    &cert,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if gen.success() {
                let log = self.dir.join("tls.log");
                self.spawn(
                    "tls",
                    "inet",
                    &[
                        "openssl", "s_server", "-accept", "443", "-cert", &cert, "-key", &key,
                        "-www", "-quiet",
                    ],
                    &log,
                )?;
            }
        }
        // wait until the HTTP servers answer locally
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let a = self
                .sh("inet", "curl -s -m 1 http://203.0.113.10/ >/dev/null")
                .map(|o| o.status.success())
                .unwrap_or(false);
            let b = self
                .sh("srv", "curl -s -m 1 http://198.18.0.20/ >/dev/null")
                .map(|o| o.status.success())
                .unwrap_or(false);
            if a && b {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::Setup {
            cmd: "lab servers".into(),
            stderr: "HTTP servers did not answer within 5 s".into(),
        })
    }

    /// The zone file the lab's DNS server (203.0.113.53:53 in `inet`) answers from: one
    /// `name address ttl` per line, re-read on every query, so a test can change it.
    pub fn dns_zone_path(&self) -> PathBuf {
        self.dir.join("dns-zone.txt")
    }

    /// Lets the kernels resolve each other's MACs before the appliance starts.
    pub fn warm_neighbours(&self) {
        if self.topology != Topology::TwoArm {
            let _ = self.sh("app", "ping -c1 -W1 198.18.1.1 >/dev/null 2>&1");
            if self.topology == Topology::Ha {
                let _ = self.sh("app2", "ping -c1 -W1 198.18.1.1 >/dev/null 2>&1");
            }
            for s in ["node1", "node2", "srv"] {
                let _ = self.sh(s, "ping -c1 -W1 198.18.0.1 >/dev/null 2>&1");
            }
            let _ = self.sh("pod1", "ping -c1 -W1 198.18.64.1 >/dev/null 2>&1");
            let _ = self.sh("inet", "ping -c1 -W1 203.0.113.254 >/dev/null 2>&1");
            let _ = self.sh(
                "fab",
                "for h in 198.18.0.11 198.18.0.12 198.18.0.20 198.18.1.4 198.18.1.5 203.0.113.10 198.51.100.66; do ping -c1 -W1 $h >/dev/null 2>&1 & done; wait",
            );
            return;
        }
        let _ = self.sh(
            "app",
            "for h in 198.18.0.11 198.18.0.12 198.18.0.20 203.0.113.10 203.0.113.254; do ping -c1 -W1 $h >/dev/null 2>&1 & done; wait",
        );
        for s in ["node1", "node2", "srv"] {
            let _ = self.sh(s, "ping -c1 -W1 198.18.0.1 >/dev/null 2>&1");
        }
        let _ = self.sh("inet", "ping -c1 -W1 203.0.113.1 >/dev/null 2>&1");
    }

    /// Waits until the appliance has prepared its namespace (its nftables table exists).
    pub fn wait_appliance_ready(&self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self
                .sh("app", "nft list table inet tollgate >/dev/null 2>&1")
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                std::thread::sleep(Duration::from_millis(300));
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// For an appliance process the lab spawned (label `appliance`): waits until it says every
    /// worker runs ([`tollgate::control::notify::READY_MESSAGE`] in its log: rings open, tables built), so
    /// no test frame arrives before a ring can take it. Gives up as soon as the process exits.
    pub fn wait_spawned_appliance(&mut self, timeout: Duration) -> bool {
        self.wait_spawned("appliance", timeout)
    }

    /// [`Lab::wait_spawned_appliance`] for the appliance spawned under `label`.
    pub fn wait_spawned(&mut self, label: &str, timeout: Duration) -> bool {
        let log = self
            .logs
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, p)| p.clone());
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some((_, c)) = self.children.iter_mut().find(|(l, _)| l == label) {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            let ready = match &log {
                Some(p) => fs::read_to_string(p)
                    .map(|t| t.contains(tollgate::control::notify::READY_MESSAGE))
                    .unwrap_or(false),
                None => self.wait_appliance_ready(Duration::from_millis(200)),
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Keeps everything running after this value drops (for `lab up`); records the prefix and
    /// PIDs in [`STATE_DIR`] for `lab down`.
    pub fn detach(mut self) -> io::Result<PathBuf> {
        fs::create_dir_all(STATE_DIR)?;
        let path = Path::new(STATE_DIR).join(format!("{}state", self.prefix));
        let mut s = format!("prefix {}\ndir {}\n", self.prefix, self.dir.display());
        for n in &self.created {
            let _ = writeln!(s, "ns {n}");
        }
        for (l, c) in &self.children {
            let _ = writeln!(s, "pid {} {}", c.id(), l);
        }
        fs::write(&path, s)?;
        self.detached = true;
        Ok(path)
    }

    /// Stops every child (SIGTERM by PID, then SIGKILL) and deletes the namespaces.
    pub fn down(&mut self) {
        for (_, mut c) in self.children.drain(..).rev() {
            stop_child(&mut c, Duration::from_millis(1500));
        }
        for n in self.created.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.detached {
            self.down();
        }
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends SIGTERM to one PID we started (the `kill` command, never by name).
pub fn term_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn stop_child(c: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = c.try_wait() {
        return true;
    }
    term_pid(c.id());
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

/// `lab down`: removes what a detached `lab up` recorded (all recorded labs when `prefix` is
/// None).
pub fn down_recorded(prefix: Option<&str>) -> io::Result<Vec<String>> {
    let mut done = Vec::new();
    let Ok(rd) = fs::read_dir(STATE_DIR) else {
        return Ok(done);
    };
    for e in rd.flatten() {
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        let mut pfx = None;
        let mut dir = None;
        let mut pids = Vec::new();
        let mut nss = Vec::new();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["prefix", p] => pfx = Some(p.to_string()),
                ["dir", d] => dir = Some(d.to_string()),
                ["ns", n] => nss.push(n.to_string()),
                ["pid", p, ..] => pids.extend(p.parse::<u32>().ok()),
                _ => {}
            }
        }
        let Some(p) = pfx else { continue };
        if prefix.is_some_and(|want| want != p) {
            continue;
        }
        for pid in pids.iter().rev() {
            term_pid(*pid);
        }
        std::thread::sleep(Duration::from_millis(500));
        if nss.is_empty() {
            nss = ALL_NAMESPACES.iter().map(|s| format!("{p}{s}")).collect();
        }
        for n in nss.iter().rev().filter(|n| n.starts_with(&p)) {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(d) = dir {
            let _ = fs::remove_dir_all(d);
        }
        let _ = fs::remove_file(e.path());
        done.push(p);
    }
    Ok(done)
}

/// `lab status`: recorded labs and whether their namespaces and processes are alive.
pub fn status_recorded() -> String {
    let mut s = String::new();
    let Ok(rd) = fs::read_dir(STATE_DIR) else {
        return "no lab is up\n".into();
    };
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for e in rd.flatten() {
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["prefix", p] => {
                    let recorded: Vec<String> = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("ns "))
                        .map(str::to_string)
                        .collect();
                    let n = recorded
                        .iter()
                        .filter(|x| {
                            netns
                                .lines()
                                .any(|l| l.split_whitespace().next() == Some(x))
                        })
                        .count();
                    let _ = writeln!(s, "lab {p}: {n}/{} namespaces present", recorded.len());
                }
                ["pid", p, label] => {
                    let alive = Path::new(&format!("/proc/{p}")).exists();
                    let _ = writeln!(
                        s,
                        "  {label} pid {p} {}",
                        if alive { "running" } else { "gone" }
                    );
                }
                _ => {}
            }
        }
    }
    if s.is_empty() {
        s.push_str("no lab is up\n");
    }
    s
}

/// One check of `lab run`.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

fn out_text(o: &io::Result<Output>) -> (bool, String) {
    match o {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(100)
        .collect()
}

/// The traffic checks, from the lab's namespaces through the running appliance.
pub fn traffic_checks(lab: &Lab) -> Vec<Check> {
    let ha = lab.topology == Topology::Ha;
    // What a server sees as the client: the public IP (either appliance's, behind the balancer).
    let snated =
        |t: &str| t.contains("peer=203.0.113.1:") || (ha && t.contains("peer=203.0.113.2:"));
    let mut v = Vec::new();
    let mut add = |name: &str, pass: bool, detail: String| {
        v.push(Check {
            name: name.into(),
            pass,
            detail,
        })
    };
    for node in ["node1", "node2"] {
        let (ok, t) = out_text(&lab.sh(node, "curl -s -m 5 http://203.0.113.10/"));
        let pass = ok && snated(&t);
        add(
            &format!("{node}: HTTP to 203.0.113.10 is SNATed"),
            pass,
            format!("server saw {}", first_line(&t)),
        );
    }
    let (ok, t) = out_text(&lab.sh("node1", "curl -s -m 3 http://198.51.100.66/"));
    add(
        "node1: HTTP to 198.51.100.66 is denied",
        !ok,
        if ok {
            format!("got an answer: {}", first_line(&t))
        } else {
            "no answer (dropped)".into()
        },
    );
    let (ok, t) = out_text(&lab.sh("node1", "ping -c 3 -i 0.2 -W 2 203.0.113.10"));
    add(
        "node1: ping 203.0.113.10 through the NAT",
        ok,
        first_line(t.lines().rev().nth(1).unwrap_or("")),
    );
    let (ok, t) = out_text(&lab.sh("node1", "echo hello | socat -T 2 - UDP4:203.0.113.10:7"));
    add(
        "node1: UDP echo is SNATed",
        ok && snated(&t),
        format!("echo server saw {}", first_line(&t)),
    );
    let src = lab.topology.icmp_source();
    let (_, t) = out_text(&lab.sh("node1", "ping -c 1 -t 1 -W 2 203.0.113.10"));
    let from = t.contains(&format!("From {src} "))
        || (ha && t.contains(&format!("From {} ", crate::fabric::APPLIANCE2_NIC)));
    let pass = from && t.to_lowercase().contains("time to live exceeded");
    add(
        &if ha {
            "node1: TTL 1 answered with time-exceeded from an appliance's NIC".to_string()
        } else {
            format!("node1: TTL 1 answered with time-exceeded from {src}")
        },
        pass,
        first_line(t.lines().nth(1).unwrap_or("")),
    );
    // DNAT keeps the client's address, so the answer must come back through the same
    // appliance: behind the balancer it may not (Azure Firewall SNATs DNATed traffic for that).
    if !ha {
        let (ok, t) = out_text(&lab.sh("inet", "curl -s -m 5 http://203.0.113.1:8080/"));
        add(
            "internet: DNAT 203.0.113.1:8080 reaches 198.18.0.20:80",
            ok && t.contains("peer=203.0.113.10:"),
            format!("inside server saw {}", first_line(&t)),
        );
    }
    let (ok, _) = out_text(&lab.sh("inet", "curl -s -m 3 http://203.0.113.1:9999/"));
    add(
        "internet: unsolicited inbound is dropped",
        !ok,
        if ok {
            "answered".into()
        } else {
            "no answer".into()
        },
    );
    if lab.topology != Topology::TwoArm {
        let (ok, t) = out_text(&lab.sh("pod1", "curl -s -m 5 http://203.0.113.10/"));
        add(
            "pod1 (kubenet, behind node1): HTTP to 203.0.113.10 is SNATed",
            ok && snated(&t),
            format!("server saw {}", first_line(&t)),
        );
        let probe = format!(
            "curl -s -m 3 --interface {} -o /dev/null -w '%{{http_code}}' http://{}/healthz",
            crate::fabric::PLATFORM,
            lab.topology.management()
        );
        let (ok, t) = out_text(&lab.sh("fab", &probe));
        add(
            "platform: the health probe from 192.0.2.16 is answered",
            ok && t.trim() == "200",
            format!("HTTP {}", first_line(&t)),
        );
        // The management listener answers the platform only: not a pod, not a node.
        let metrics = format!("curl -s -m 2 http://{}/metrics", lab.topology.management());
        let (pod_ok, _) = out_text(&lab.sh("pod1", &metrics));
        let (node_ok, _) = out_text(&lab.sh("node2", &metrics));
        add(
            "pod1 and node2: the appliance's /metrics does not answer them",
            !pod_ok && !node_ok,
            format!(
                "pod1 {}, node2 {}",
                if pod_ok { "answered" } else { "no answer" },
                if node_ok { "answered" } else { "no answer" }
            ),
        );
    }
    if lab.topology == Topology::OneArm {
        // The NIC's IP forwarding off (a deployment without `--ip-forwarding true`): the
        // fabric drops what the appliance forwards, and counts it; back on, traffic flows.
        let off = crate::fabric::set_appliance_ip_forwarding(lab, false).is_ok();
        let (failed_off, _) = out_text(&lab.sh("node1", "curl -s -m 2 http://203.0.113.10/"));
        let (_, c) = out_text(&lab.sh(
            "fab",
            "nft list counter ip fabric-appliance-ipfwd dropped | grep -o 'packets [0-9]*'",
        ));
        let back = crate::fabric::set_appliance_ip_forwarding(lab, true).is_ok();
        let (ok_on, t) = out_text(&lab.sh("node1", "curl -s -m 5 http://203.0.113.10/"));
        add(
            "fabric: without IP forwarding on its NIC the appliance's egress is dropped",
            off && back && !failed_off && ok_on && t.contains("peer=203.0.113.1:"),
            format!(
                "off: no answer, fabric dropped {}; on again: served",
                c.trim()
            ),
        );
        let (ok, _) = out_text(&lab.sh("inet", "curl -s -m 3 http://203.0.113.1:9090/healthz"));
        add(
            "internet: the management port of the public IP is closed",
            !ok,
            if ok {
                "answered".into()
            } else {
                "no answer".into()
            },
        );
    }
    if which("openssl") {
        let (ok, t) = out_text(&lab.sh("node1", "curl -sk -m 5 -o /dev/null -w '%{http_code}' --resolve allowed.example:443:203.0.113.10 https://allowed.example/"));
        add(
            "node1: TLS to allowed.example (application rule) passes",
            ok,
            format!("HTTP {}", first_line(&t)),
        );
        let (ok, _) = out_text(&lab.sh("node1", "curl -sk -m 4 -o /dev/null --resolve denied.example:443:203.0.113.10 https://denied.example/"));
        add(
            "node1: TLS to denied.example is denied by SNI",
            !ok,
            if ok {
                "answered".into()
            } else {
                "no answer / reset".into()
            },
        );
    }
    if lab.topology != Topology::TwoArm {
        // A network rule on an FQDN (api.example, port 8080), resolved by the appliance through
        // the platform's DNS: its address passes, another address on the same port does not.
        let (ok, t) = out_text(&lab.sh("node1", "curl -s -m 5 http://203.0.113.10:8080/"));
        let (other, _) = out_text(&lab.sh("node1", "curl -s -m 2 http://203.0.113.53:8080/"));
        add(
            "node1: a network rule on api.example (resolved via the platform's DNS) allows it",
            ok && snated(&t) && !other,
            format!(
                "203.0.113.10:8080 {}, 203.0.113.53:8080 {}",
                if ok { "served" } else { "not served" },
                if other { "served (wrong)" } else { "denied" }
            ),
        );
    }
    v
}

/// The systemd unit the VM image ships: the lab runs the appliance as it does.
pub const UNIT: &str = include_str!("../../vm-image/overlay/etc/systemd/system/tollgate.service");

/// The capabilities a `Key=CAP_A CAP_B` line of [`UNIT`] names, lower case without `cap_`.
fn unit_caps(key: &str) -> Vec<String> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace())
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// The unit's `key=` limit as prlimit's `SOFT:HARD`, clamped to this process's hard limit
/// (`/proc/self/limits` line `name`): raising a hard limit needs CAP_SYS_RESOURCE, which a
/// container may not give.
fn limit(key: &str, name: &str) -> String {
    let want = UNIT
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("infinity")
        .trim()
        .to_string();
    let hard = fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| {
            l[name.len()..]
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unlimited".into());
    let num = |v: &str| match v {
        "infinity" | "unlimited" => None,
        n => n.parse::<u64>().ok(),
    };
    let v = match (num(&want), num(&hard)) {
        (_, None) => want.replace("infinity", "unlimited"),
        (None, Some(h)) => h.to_string(),
        (Some(w), Some(h)) => w.min(h).to_string(),
    };
    format!("{v}:{}", hard.replace("infinity", "unlimited"))
}

/// `argv` wrapped to run as the image's unit runs it: its capability bounding and ambient sets
/// (`setpriv`, uid 0 keeping only those), `NoNewPrivileges`, and its file and memory-lock limits
/// (`prlimit`). The rest of the unit's sandbox (read-only system, private /tmp, ...) needs
/// systemd and is not reproduced.
pub fn as_unit(argv: &[&str]) -> Vec<String> {
    let set = |caps: Vec<String>| {
        let mut v = String::from("-all");
        for c in caps {
            v.push_str(",+");
            v.push_str(&c);
        }
        v
    };
    let nofile = limit("LimitNOFILE", "Max open files");
    let memlock = limit("LimitMEMLOCK", "Max locked memory");
    let bounding = set(unit_caps("CapabilityBoundingSet"));
    let ambient = set(unit_caps("AmbientCapabilities"));
    let mut v: Vec<String> = [
        "prlimit",
        &format!("--nofile={nofile}"),
        &format!("--memlock={memlock}"),
        "--",
        "setpriv",
        "--bounding-set",
        &bounding,
        "--inh-caps",
        &ambient,
        "--ambient-caps",
        &ambient,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if UNIT.lines().any(|l| l.trim() == "NoNewPrivileges=yes") {
        v.push("--no-new-privs".into());
    }
    v.push("--".into());
    v.extend(argv.iter().map(|s| s.to_string()));
    v
}

/// Formats checks as the `lab run` report.
pub fn format_report(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let _ = writeln!(
            s,
            "{}  {:<60} {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    let _ = writeln!(
        s,
        "{} checks, {} passed, {} failed",
        checks.len(),
        checks.len() - failed,
        failed
    );
    s
}

/// `lab run`: up, start the appliance (`exe run --config config`), traffic, report, down.
/// Returns (report text, all passed). `stop` (Ctrl-C) aborts early; teardown always happens.
pub fn run_lab(
    exe: &Path,
    config: &Path,
    topology: Topology,
    workers: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Result<(String, bool), LabError> {
    let mut lab = Lab::up_with(&new_prefix(), topology)?;
    let mut report = format!(
        "lab {} ({topology}): namespaces {}\n",
        lab.prefix,
        topology
            .namespaces()
            .iter()
            .map(|s| lab.ns(s))
            .collect::<Vec<_>>()
            .join(" ")
    );
    lab.start_servers()?;
    lab.warm_neighbours();
    let log = lab.dir.join("appliance.log");
    let exe_s = exe.to_string_lossy().to_string();
    let cfg_s = config.to_string_lossy().to_string();
    let w = workers.map(|w| w.to_string());
    let mut args = vec![exe_s.as_str(), "run", "--config", cfg_s.as_str()];
    if let Some(w) = &w {
        args.extend(["--workers", w.as_str()]);
    }
    let unit = as_unit(&args);
    let args: Vec<&str> = unit.iter().map(String::as_str).collect();
    lab.spawn("appliance", "app", &args, &log)?;
    if !lab.wait_spawned_appliance(Duration::from_secs(10)) {
        let text = fs::read_to_string(&log).unwrap_or_default();
        return Err(LabError::Appliance(text.trim().to_string()));
    }
    let startup = fs::read_to_string(&log).unwrap_or_default();
    let running = startup
        .lines()
        .find(|l| l.contains(": running "))
        .unwrap_or_else(|| startup.lines().next().unwrap_or(""));
    let _ = writeln!(report, "{}", first_line(running));
    if topology == Topology::Ha {
        // The second appliance: the same configuration with its own NIC address.
        let text = fs::read_to_string(config)?
            .replace(crate::fabric::APPLIANCE_NIC, crate::fabric::APPLIANCE2_NIC);
        let cfg2 = lab.dir.join("appliance2.toml");
        fs::write(&cfg2, text)?;
        let log2 = lab.dir.join("appliance2.log");
        let cfg2_s = cfg2.to_string_lossy().to_string();
        let mut args = vec![exe_s.as_str(), "run", "--config", cfg2_s.as_str()];
        if let Some(w) = &w {
            args.extend(["--workers", w.as_str()]);
        }
        let unit = as_unit(&args);
        let args: Vec<&str> = unit.iter().map(String::as_str).collect();
        lab.spawn("appliance2", "app2", &args, &log2)?;
        if !lab.wait_spawned("appliance2", Duration::from_secs(10)) {
            let text = fs::read_to_string(&log2).unwrap_or_default();
            return Err(LabError::Appliance(text.trim().to_string()));
        }
        let script = lab.dir.join("ilb-prober.sh");
        fs::write(&script, crate::fabric::prober_script())?;
        let s = script.to_string_lossy().to_string();
        let plog = lab.dir.join("ilb-prober.log");
        lab.spawn("ilb-prober", "fab", &["bash", &s], &plog)?;
    }
    let checks = if stop.load(Ordering::Relaxed) {
        Vec::new()
    } else if topology == Topology::Ha {
        let mut c = traffic_checks(&lab);
        c.extend(ha_checks(&mut lab, exe));
        c
    } else {
        let mut c = traffic_checks(&lab);
        c.extend(operator_checks(&lab, exe));
        c
    };
    lab.stop("appliance", Duration::from_secs(5));
    let text = fs::read_to_string(&log).unwrap_or_default();
    report.push_str(&format_report(&checks));
    report.push_str("appliance counters at exit (drops by reason):\n");
    for l in text.lines().filter(|l| {
        l.starts_with("drop.")
            || l.starts_with("rx_packets")
            || l.starts_with("tx_packets")
            || l.starts_with("neighbour_")
            || l.starts_with("forwarded")
    }) {
        let _ = writeln!(report, "  {l}");
    }
    let all = !checks.is_empty() && checks.iter().all(|c| c.pass);
    lab.down();
    Ok((report, all))
}

/// The HA pair behind the balancer: both appliances take new flows; then one is killed
/// (SIGKILL) under a steady stream of new connections, and the time until new connections
/// succeed again through the survivor is measured (the balancer's probes take the dead one out).
pub fn ha_checks(lab: &mut Lab, exe: &Path) -> Vec<Check> {
    let exe = exe.to_string_lossy();
    let mut v = Vec::new();
    for _ in 0..16 {
        let _ = lab.sh("node1", "curl -s -m 2 -o /dev/null http://203.0.113.10/");
    }
    let created = |ns: &str| -> u64 {
        let (_, t) = out_text(&lab.sh(ns, &format!("{exe} stats --json 2>/dev/null")));
        let j: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
        j["flows_created"].as_u64().unwrap_or(0)
    };
    let (a, b) = (created("app"), created("app2"));
    v.push(Check {
        name: "ha: the balancer spreads new flows over both appliances".into(),
        pass: a > 0 && b > 0,
        detail: format!("flows created: app {a}, app2 {b}"),
    });
    let pid = lab
        .pids()
        .into_iter()
        .find(|(l, _)| l == "appliance")
        .map(|(_, p)| p);
    let killed = pid.is_some_and(|p| {
        Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    });
    let t0 = Instant::now();
    let (mut tries, mut failed, mut run) = (0u32, 0u32, 0u32);
    let mut last_fail = None;
    // New connections every ~100 ms until 20 in a row succeed (a dead backend holds half the
    // buckets, so that many in a row means the balancer took it out), at most 40 s.
    while run < 20 && t0.elapsed() < Duration::from_secs(40) {
        let node = if tries % 2 == 0 { "node1" } else { "node2" };
        let (ok, _) = out_text(&lab.sh(node, "curl -sf -m 1 -o /dev/null http://203.0.113.10/"));
        tries += 1;
        if ok {
            run += 1;
        } else {
            failed += 1;
            run = 0;
            last_fail = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let outage = last_fail.unwrap_or_default().as_secs_f64();
    let bound =
        f64::from(crate::fabric::PROBE_INTERVAL_S * (crate::fabric::PROBE_THRESHOLD + 1)) + 2.0;
    v.push(Check {
        name: format!("ha: after SIGKILL of one appliance, new connections succeed within {bound:.0} s"),
        pass: killed && run >= 20 && outage <= bound,
        detail: format!(
            "new connections failed for {outage:.1} s ({failed} of {tries} failed), then 20 in a row succeeded"
        ),
    });
    v
}

/// What an operator sees of that traffic through the admin socket (`tollgate stats`, `flows`,
/// `explain` against the running configuration) and the metrics endpoint.
pub fn operator_checks(lab: &Lab, exe: &Path) -> Vec<Check> {
    let exe = exe.to_string_lossy();
    let mut v = Vec::new();
    let (ok, t) = out_text(&lab.sh("app", &format!("{exe} stats --json 2>/dev/null")));
    let stats: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
    let denied = stats["drops"]["rule_deny"].as_u64().unwrap_or(0);
    let created = stats["flows_created"].as_u64().unwrap_or(0);
    v.push(Check {
        name: "operator: `tollgate stats` counts the admitted and denied flows".into(),
        pass: ok && denied >= 1 && created >= 4,
        detail: format!("flows_created {created}, drop.rule_deny {denied}"),
    });
    let (ok, t) = out_text(&lab.sh(
        "app",
        &format!("{exe} flows --json --src 198.18.0.11 --dst 203.0.113.10 2>/dev/null"),
    ));
    let flows: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
    let n = flows["matched"].as_u64().unwrap_or(0);
    v.push(Check {
        name: "operator: `tollgate flows` lists node1's flows to 203.0.113.10".into(),
        pass: ok && n >= 1,
        detail: format!(
            "{n} flow(s), first: {} -> {} as {}",
            flows["flows"][0]["source"].as_str().unwrap_or("-"),
            flows["flows"][0]["destination"].as_str().unwrap_or("-"),
            flows["flows"][0]["translated_source"]
                .as_str()
                .unwrap_or("-")
        ),
    });
    let (ok, t) = out_text(&lab.sh(
        "app",
        &format!("{exe} explain --src 198.18.0.11 --dst 198.51.100.66:80 --proto tcp"),
    ));
    let by = t
        .lines()
        .find(|l| l.trim_start().starts_with("by "))
        .unwrap_or("")
        .trim();
    v.push(Check {
        name: "operator: `tollgate explain` names the rule that denied 198.51.100.66".into(),
        pass: ok && t.contains("decision: deny") && !by.is_empty(),
        detail: by.to_string(),
    });
    let (ok, t) = out_text(&lab.sh(
        "app",
        &format!("curl -s -m 3 http://{}/metrics", lab.topology.management()),
    ));
    let snat = lab.topology.snat_address();
    let want =
        format!("tollgate_snat_address_utilisation_ratio{{address=\"{snat}\",protocol=\"tcp\"}}");
    let line = t.lines().find(|l| l.starts_with(&want)).unwrap_or("");
    v.push(Check {
        name: format!("operator: /metrics reports SNAT use of {snat}"),
        pass: ok && !line.is_empty(),
        detail: line.to_string(),
    });
    v
}

/// The lab's initial DNS zone.
pub const DNS_ZONE: &str = "api.example 203.0.113.10 5\nother.example 198.51.100.66 5\n";

/// The lab's DNS server: UDP and TCP (RFC 7766 framing) on 203.0.113.53:53, A/IN queries
/// answered from the zone file given as argument (re-read per query; lines `name address ttl`,
/// and a fourth field `tc` makes the UDP answer for that name truncated, TC set and no records,
/// so that the client must ask again over TCP), NXDOMAIN for other names, NOTIMP for anything
/// else. The question is echoed as sent (the case of the name kept). Logs one line per query:
/// `dns peer=IP:PORT name=NAME asked=NAME-AS-SENT rcode=N answers=N proto=udp|tcp`.
pub const DNS_PY: &str = r#"
import socket, struct, sys, threading

zone_path = sys.argv[1]
addr = sys.argv[2] if len(sys.argv) > 2 else "203.0.113.53"

def zone():
    z, tc = {}, set()
    try:
        for line in open(zone_path):
            f = line.split()
            if len(f) in (3, 4):
                n = f[0].lower().rstrip(".")
                z.setdefault(n, []).append((socket.inet_aton(f[1]), int(f[2])))
                if len(f) == 4 and f[3] == "tc":
                    tc.add(n)
    except OSError:
        pass
    return z, tc

lock = threading.Lock()

def answer(q, peer, proto):
    if len(q) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    at, labels = 12, []
    try:
        while q[at]:
            labels.append(q[at + 1:at + 1 + q[at]].decode("ascii"))
            at += 1 + q[at]
        qtype, qclass = struct.unpack("!HH", q[at + 1:at + 5])
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    question = q[12:at + 5]
    asked = ".".join(labels)
    name = asked.lower()
    rd = flags & 0x0100
    answers = b""
    tc = 0
    if qd != 1 or qclass != 1:
        rcode, n = 4, 0
    else:
        z, truncated = zone()
        recs = z.get(name)
        if recs is None:
            rcode, n = 3, 0
        elif proto == "udp" and name in truncated:
            rcode, n, tc = 0, 0, 0x0200
        else:
            rcode, n = 0, 0
            if qtype == 1:
                for addr, ttl in recs:
                    answers += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + addr
                    n += 1
    hdr = struct.pack("!HHHHHH", qid, 0x8400 | tc | rd | 0x0080 | rcode, 1, n, 0, 0)
    with lock:
        sys.stderr.write("dns peer=%s:%d name=%s asked=%s rcode=%d answers=%d proto=%s\n" % (peer[0], peer[1], name, asked, rcode, n, proto))
    return hdr + question + answers

def serve_tcp():
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, 53))
    t.listen(16)
    while True:
        c, peer = t.accept()
        try:
            c.settimeout(3)
            buf = b""
            while True:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    more = c.recv(4096)
                    if not more:
                        raise EOFError
                    buf += more
                n = struct.unpack("!H", buf[:2])[0]
                q, buf = buf[2:2 + n], buf[2 + n:]
                r = answer(q, peer, "tcp")
                if r is None:
                    break
                c.sendall(struct.pack("!H", len(r)) + r)
        except (OSError, EOFError, struct.error):
            pass
        finally:
            c.close()

threading.Thread(target=serve_tcp, daemon=True).start()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
while True:
    q, peer = s.recvfrom(512)
    r = answer(q, peer, "udp")
    if r is not None:
        s.sendto(r, peer)
"#;

/// Servers for the lab: HTTP on :80 and :8080 answering `peer=<ip>:<port>` (the address the
/// server saw) and UDP echo on :7 answering the same.
pub const SERVERS_PY: &str = r#"
import http.server, socket, socketserver, sys, threading

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = "%s:%d" % self.client_address[:2]
        body = ("peer=%s\n" % peer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        sys.stderr.write("http peer=%s path=%s\n" % (peer, self.path))
    def log_message(self, *a):
        pass

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

def udp_echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(65535)
        sys.stderr.write("udp peer=%s:%d\n" % peer)
        s.sendto(b"peer=%s:%d " % (peer[0].encode(), peer[1]) + data, peer)

threading.Thread(target=udp_echo, args=(7,), daemon=True).start()
threading.Thread(target=S(("0.0.0.0", 8080), H).serve_forever, daemon=True).start()
S(("0.0.0.0", 80), H).serve_forever()
"#;
