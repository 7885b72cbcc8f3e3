//! QUIC application rules with a real QUIC client and server (aioquic): `tollgate run` in the
//! lab, an aioquic echo server on 203.0.113.10:443/udp in the internet namespace (self-signed
//! certificate made by openssl at test time), aioquic clients on the inside. Only a `quic:443`
//! application rule can allow the flows. Needs root; skips loudly if aioquic cannot be imported
//! (dev.sh installs it).

mod common;

use std::time::{Duration, Instant};

use common::*;

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
name = "lab"
priority = 100

  [[group.collection]]
  name = "quic-sites"
  priority = 200
  kind = "application"
  action = "allow"

    [[group.collection.rule]]
    name = "allowed-quic"
    sources = ["198.18.0.0/15"]
    fqdns = ["allowed.example"]
    protocols = ["quic:443"]
"#;

/// An echo server over QUIC streams: answers each stream with the peer address it saw.
const SERVER_PY: &str = r#"
import asyncio, sys
from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived

class Echo(QuicConnectionProtocol):
    def quic_event_received(self, ev):
        if isinstance(ev, StreamDataReceived) and ev.end_stream:
            host, port = self._quic._network_paths[0].addr[:2]
            reply = b"peer=%s:%d echo=%s" % (host.encode(), port, ev.data)
            print("served", reply.decode(), flush=True)
            self._quic.send_stream_data(ev.stream_id, reply, end_stream=True)
            self.transmit()

async def main():
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    cfg.load_cert_chain(sys.argv[1], sys.argv[2])
    await serve("203.0.113.10", 443, configuration=cfg, create_protocol=Echo)
    print("listening", flush=True)
    await asyncio.Future()

asyncio.run(main())
"#;

/// Connects with the given server name (and, with `big`, a ClientHello too large for one
/// Initial packet), sends one stream and prints the reply, or FAILED after 4 s.
const CLIENT_PY: &str = r#"
import asyncio, ssl, sys
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

def config(name, big):
    alpn = ["echo"] + (["x-filler-%02d-%s" % (i, "f" * 40) for i in range(30)] if big else [])
    return QuicConfiguration(is_client=True, alpn_protocols=alpn, server_name=name,
                             verify_mode=ssl.CERT_NONE)

async def main(name, big):
    async with connect("203.0.113.10", 443, configuration=config(name, big)) as c:
        r, w = await c.create_stream()
        w.write(b"hello-" + name.encode())
        w.write_eof()
        print("REPLY", (await r.read()).decode(), flush=True)

def first_flight(name, big):
    # The same configuration, sans I/O: how many datagrams the ClientHello takes.
    from aioquic.quic.connection import QuicConnection
    c = QuicConnection(configuration=config(name, big))
    c.connect(("203.0.113.10", 443), now=0.0)
    return len(c.datagrams_to_send(now=0.0))

print("FLIGHT", first_flight(sys.argv[1], sys.argv[2] == "big"), flush=True)
try:
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2] == "big"), 4))
except BaseException as e:
    print("FAILED %r" % e, flush=True)
    sys.exit(1)
"#;

fn aioquic_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import aioquic"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn quic_names_decide_with_a_real_client_and_server() {
    let test = "quic_names_decide_with_a_real_client_and_server";
    if !root_or_skip(test) {
        return;
    }
    if !aioquic_available() {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: python3 cannot import aioquic; run ./dev.sh test (it \
             installs it with pip) !!!!!!!!\n"
        );
        return;
    }
    let mut lab = lab();
    let cert = lab.dir.join("cert.pem");
    let key = lab.dir.join("key.pem");
    assert!(
        cert.exists() && key.exists(),
        "the lab makes a certificate with openssl"
    );
    let server = lab.dir.join("quic_server.py");
    std::fs::write(&server, SERVER_PY).unwrap();
    let client = lab.dir.join("quic_client.py");
    std::fs::write(&client, CLIENT_PY).unwrap();
    let server_log = lab.dir.join("quic_server.log");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    lab.spawn(
        "quic-server",
        "inet",
        &["python3", "-u", &s(&server), &s(&cert), &s(&key)],
        &server_log,
    )
    .expect("spawn the QUIC server");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&server_log)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "QUIC server did not start: {}",
            std::fs::read_to_string(&server_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let config = lab.dir.join("quic.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let (_, log) = start_appliance(
        &mut lab,
        &[exe, "run", "--config", &s(&config), "--workers", "1"],
    );

    let quic = |ns: &str, name: &str, big: bool| {
        sh(
            &lab,
            ns,
            &format!(
                "python3 {} {name} {} 2>&1",
                s(&client),
                if big { "big" } else { "small" }
            ),
        )
    };
    let (ok_allowed, allowed) = quic("node1", "allowed.example", false);
    let (ok_big, big) = quic("node2", "allowed.example", true);
    let (ok_denied, denied) = quic("node1", "denied.example", false);
    let (_, metrics) = sh(&lab, "app", "curl -s -m 3 http://127.0.0.1:9090/metrics");
    let exited = lab.stop("appliance", Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let served = std::fs::read_to_string(&server_log).unwrap_or_default();
    eprintln!("--- appliance\n{text}\n--- server\n{served}");

    assert!(
        ok_allowed
            && allowed.contains("REPLY peer=203.0.113.1:")
            && allowed.contains("echo=hello-allowed.example"),
        "allowed.example over QUIC, answered to the SNAT address: {allowed}"
    );
    assert!(
        allowed.contains("FLIGHT 1") && big.contains("FLIGHT 2"),
        "the big ClientHello takes two datagrams: {allowed} / {big}"
    );
    assert!(
        ok_big && big.contains("REPLY peer=203.0.113.1:"),
        "a ClientHello over two Initial datagrams: {big}"
    );
    assert!(
        !ok_denied && denied.contains("FAILED"),
        "denied.example must time out: {denied}"
    );
    assert!(
        !served.contains("hello-denied.example"),
        "the server never saw the denied client: {served}"
    );
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        metric("tollgate_drops_total{reason=\"app_deny\"} ") >= 1,
        "app_deny counted:\n{metrics}"
    );
    assert!(text.contains("drop.app_deny"), "counters at exit:\n{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |action: &str, fqdn: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["fqdn"] == fqdn)
            .unwrap_or_else(|| panic!("no {action} event for {fqdn} in {events:?}"))
            .clone()
    };
    let allow = find("allow", "allowed.example");
    assert_eq!(allow["protocol"], "UDP");
    assert_eq!(allow["app_protocol"], "quic");
    assert_eq!(allow["rule"], "allowed-quic");
    assert!(allow["snat"].as_str().unwrap().starts_with("203.0.113.1:"));
    assert_eq!(allow["destination"], "203.0.113.10:443");
    let deny = find("deny", "denied.example");
    assert_eq!(deny["reason"], "app_deny");
    assert_eq!(deny["app_protocol"], "quic");
    assert!(exited, "tollgate run stops on SIGTERM");
}
