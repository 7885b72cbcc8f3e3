//! Application rules with real clients and servers: curl and openssl against `openssl s_server`
//! (one IP, certificates for two names) and an HTTP server, through the appliance in the lab.
//! The policy is TOML through the real loader: only names can allow web traffic. Needs root.

mod common;

use common::*;
use tollgate::datapath::DropReason;

const CONFIG: &str = r#"
[appliance]
inside_prefixes = ["198.18.0.0/15"]

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
name = "lab"
priority = 100

  [[group.collection]]
  name = "web"
  priority = 200
  kind = "application"
  action = "allow"

    [[group.collection.rule]]
    name = "allowed-site"
    sources = ["198.18.0.0/15"]
    fqdns = ["allowed.example"]
    protocols = ["https:443", "http:80"]
"#;

/// Sends a real ClientHello for allowed.example in two TCP segments and reports whether the
/// server answered with a TLS handshake record.
const SPLIT_HELLO_PY: &str = r#"
import socket, ssl, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
t = ctx.wrap_bio(i, o, server_hostname="allowed.example")
try:
    t.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = o.read()
s = socket.create_connection(("203.0.113.10", 443), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.send(hello[:100])
time.sleep(0.2)
s.send(hello[100:])
try:
    r = s.recv(5)
    print("SERVERHELLO" if r[:1] == b"\x16" else "OTHER %r" % r)
except OSError as e:
    print("ERROR", e)
"#;

#[test]
fn names_decide_tls_and_http_with_real_clients() {
    if !root_or_skip("names_decide_tls_and_http_with_real_clients") {
        return;
    }
    let loaded = tollgate::config::load_str(CONFIG, "e2e_app.toml").expect("config loads");
    let lab = lab();
    let app = Appliance::start(&lab, loaded.engine, loaded.policy, 1);
    let curl = |name: &str| {
        sh(
            &lab,
            "node1",
            &format!("curl -sk -m 5 --resolve {name}:443:203.0.113.10 https://{name}/ -o /dev/null -w '%{{http_code}}'"),
        )
    };
    let (ok_allowed, out_allowed) = curl("allowed.example");
    let (ok_denied, out_denied) = curl("denied.example");
    let (ok_sclient, sclient) = sh(
        &lab,
        "node2",
        "openssl s_client -connect 203.0.113.10:443 -servername allowed.example </dev/null 2>&1",
    );
    let (ok_nosni, _) = sh(
        &lab,
        "node2",
        "openssl s_client -connect 203.0.113.10:443 -noservername </dev/null 2>&1",
    );
    let (ok_host, _) = sh(
        &lab,
        "node1",
        "curl -s -m 5 -H 'Host: allowed.example' http://203.0.113.10/",
    );
    let (ok_other_host, _) = sh(
        &lab,
        "node1",
        "curl -s -m 5 -H 'Host: other.example' http://203.0.113.10/",
    );
    let script = lab_file(&lab, "split_hello.py", SPLIT_HELLO_PY);
    let (_, split) = sh(&lab, "node2", &format!("python3 {script}"));
    let t = app.stop();

    assert!(
        ok_allowed && out_allowed == "200",
        "allowed.example over TLS: {out_allowed}"
    );
    assert!(
        !ok_denied,
        "denied.example must be reset, got: {out_denied}"
    );
    assert!(
        ok_sclient && sclient.contains("CONNECTED"),
        "s_client allowed: {sclient}"
    );
    assert!(!ok_nosni, "a ClientHello without SNI must be refused");
    assert!(ok_host, "HTTP with Host: allowed.example");
    assert!(!ok_other_host, "HTTP with another Host must be refused");
    assert!(
        split.contains("SERVERHELLO"),
        "a ClientHello split over two segments: {split}"
    );
    assert!(drops(&t, DropReason::AppDeny) >= 2, "app_deny counted");
    assert!(drops(&t, DropReason::NoSni) >= 1, "no_sni counted");
}

/// Writes `body` into the lab's scratch folder; returns its path.
fn lab_file(lab: &tollgate_lab::lab::Lab, name: &str, body: &str) -> String {
    let p = std::env::temp_dir().join(format!("{}-{name}", lab.ns("x")));
    std::fs::write(&p, body).expect("write script");
    p.to_string_lossy().into_owned()
}
