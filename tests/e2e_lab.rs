//! End-to-end through real namespaces: the lab topology, the appliance on AF_PACKET rings,
//! real traffic from curl, ping, socat, iperf3 and raw frames. Needs root (skips otherwise).

mod common;

use std::sync::Arc;

use common::*;
use tollgate::datapath::DropReason;

#[test]
fn server_sees_the_snat_address_and_deny_rules_deny() {
    if !root_or_skip("server_sees_the_snat_address_and_deny_rules_deny") {
        return;
    }
    let lab = lab();
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), 2);
    let (ok1, t1) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
    let (ok2, t2) = sh(&lab, "node2", "curl -s -m 5 http://203.0.113.10/");
    let (denied_ok, _) = sh(&lab, "node1", "curl -s -m 3 http://198.51.100.66/");
    let (udp_ok, udp) = sh(&lab, "node1", "echo hi | socat -T 2 - UDP4:203.0.113.10:7");
    let t = app.stop();
    assert!(ok1 && t1.contains("peer=203.0.113.1:"), "node1 got: {t1}");
    assert!(ok2 && t2.contains("peer=203.0.113.1:"), "node2 got: {t2}");
    assert!(
        udp_ok && udp.contains("peer=203.0.113.1:"),
        "udp echo got: {udp}"
    );
    assert!(!denied_ok, "198.51.100.66 must be denied");
    assert!(drops(&t, DropReason::RuleDeny) > 0);
}

#[test]
fn unsolicited_inbound_is_dropped() {
    if !root_or_skip("unsolicited_inbound_is_dropped") {
        return;
    }
    let lab = lab();
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), 2);
    let (unsolicited_ok, _) = sh(&lab, "inet", "curl -s -m 3 http://203.0.113.1:9999/");
    let (_, udp_answer) = sh(&lab, "inet", "echo x | socat -T 2 - UDP4:203.0.113.1:5353");
    let t = app.stop();
    assert!(
        !unsolicited_ok,
        "unsolicited TCP inbound must not be answered"
    );
    assert!(
        !udp_answer.contains("peer="),
        "unsolicited UDP inbound must not be answered: {udp_answer}"
    );
    assert!(
        drops(&t, DropReason::Unsolicited) > 0,
        "counted as unsolicited"
    );
}

fn dnat_reaches_the_inside_server(workers: usize) {
    let lab = lab();
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), workers);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(sh(&lab, "inet", "curl -s -m 3 http://203.0.113.1:8080/"));
    }
    let _t = app.stop();
    for (ok, text) in answers {
        assert!(
            ok && text.contains("peer=203.0.113.10:"),
            "DNAT: the inside server must answer and see the client: {text}"
        );
    }
}

#[test]
fn dnat_reaches_the_inside_server_one_worker() {
    if !root_or_skip("dnat_reaches_the_inside_server_one_worker") {
        return;
    }
    dnat_reaches_the_inside_server(1);
}

#[test]
fn dnat_reaches_the_inside_server_two_workers() {
    if !root_or_skip("dnat_reaches_the_inside_server_two_workers") {
        return;
    }
    dnat_reaches_the_inside_server(2);
}

#[test]
fn ping_through_the_nat_and_ttl_expiry_is_answered() {
    if !root_or_skip("ping_through_the_nat_and_ttl_expiry_is_answered") {
        return;
    }
    let lab = lab();
    let pcap = lab.dir.join("appliance.pcap");
    let app = Appliance::start_with(
        &lab,
        lab_engine_config(),
        lab_policy(),
        2,
        Some(pcap.clone()),
    );
    let (ping_ok, ping) = sh(&lab, "node1", "ping -c 3 -i 0.2 -W 2 203.0.113.10");
    let (_, ttl) = sh(&lab, "node1", "ping -c 1 -t 1 -W 2 203.0.113.10");
    let _t = app.stop();
    // --pcap: 3 echo requests and replies, each received and transmitted, plus the TTL probe
    let bytes = std::fs::read(&pcap).expect("pcap written");
    assert!(
        bytes.len() > 24 + 12 * (16 + 98),
        "pcap has {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let (read_ok, read) = sh(
        &lab,
        "app",
        &format!("tcpdump -nr {} icmp 2>/dev/null | wc -l", pcap.display()),
    );
    if read_ok {
        eprintln!("tcpdump reads {} ICMP records", read.trim());
    }
    assert!(ping_ok, "ping: {ping}");
    assert!(
        ttl.contains("198.18.0.1") && ttl.to_lowercase().contains("time to live exceeded"),
        "ttl: {ttl}"
    );
}

#[test]
fn a_long_iperf3_tcp_transfer_is_intact() {
    if !root_or_skip("a_long_iperf3_tcp_transfer_is_intact") {
        return;
    }
    let lab = lab();
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), 2);
    let (ok, out) = sh(&lab, "node1", "iperf3 -c 203.0.113.10 -t 8 -J");
    let t = app.stop();
    assert!(ok, "iperf3 failed: {out}");
    let received = json_bytes_after(&out, "\"sum_received\"");
    let sent = json_bytes_after(&out, "\"sum_sent\"");
    eprintln!("iperf3: sent {sent:?} received {received:?} bytes");
    let (Some(sent), Some(received)) = (sent, received) else {
        panic!("iperf3 output without sums: {out}");
    };
    assert!(received > 10_000_000, "received {received}");
    // sum_sent counts bytes written to the socket, some still in flight when the test ends
    assert!(received * 100 >= sent * 95, "received {received} of {sent}");
    assert!(t.rt.forwarded > 1000);
}

/// The first `"bytes": N` after `key` in iperf3's JSON.
fn json_bytes_after(json: &str, key: &str) -> Option<u64> {
    let rest = &json[json.find(key)?..];
    let rest = &rest[rest.find("\"bytes\"")? + 8..];
    let num: String = rest
        .trim_start_matches([':', ' ', '\t'])
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    num.parse().ok()
}

#[test]
fn port_exhaustion_drops_new_flows_under_out_of_ports() {
    if !root_or_skip("port_exhaustion_drops_new_flows_under_out_of_ports") {
        return;
    }
    let lab = lab();
    let mut cfg = lab_engine_config();
    cfg.nat.port_min = 40000;
    cfg.nat.port_max = 40001;
    cfg.timeouts.udp = 2;
    let app = Appliance::start(&lab, cfg, lab_policy(), 1);
    let mut answered = 0;
    for sport in [5001, 5002, 5003, 5004] {
        let (ok, out) = sh(
            &lab,
            "node1",
            &format!("echo x | socat -T 1 - UDP4:203.0.113.10:7,sourceport={sport}"),
        );
        if ok && out.contains("peer=203.0.113.1:4000") {
            answered += 1;
        }
    }
    // The mappings expire (2 s + the 1 s expiry granularity): the pool recovers.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (ok, after) = sh(
        &lab,
        "node1",
        "echo x | socat -T 1 - UDP4:203.0.113.10:7,sourceport=5009",
    );
    let t = app.stop();
    assert_eq!(answered, 2, "two ports, two flows");
    assert!(drops(&t, DropReason::OutOfPorts) > 0);
    assert!(
        ok && after.contains("peer=203.0.113.1:4000"),
        "recovered after expiry: {after}"
    );
}

/// Raw frames from node1 to the appliance's MAC: truncated IPv4, bad IHL, bad TCP data offset.
const MALFORMED_PY: &str = r#"
import socket, struct, sys
dst = bytes.fromhex(sys.argv[1].replace(':', ''))
src = bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':', ''))
eth = dst + src + b'\x08\x00'
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def iphdr(total, proto=6, vihl=0x45, frag=0):
    h = struct.pack('!BBHHHBBH4s4s', vihl, 0, total, 1, frag, 64, proto, 0,
                    socket.inet_aton('198.18.0.11'), socket.inet_aton('203.0.113.10'))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
for _ in range(5):
    s.send(eth + iphdr(40)[:10])                        # truncated IPv4 header
    s.send(eth + iphdr(40, vihl=0x43) + b'\0' * 20)     # IHL 3
    tcp = struct.pack('!HHIIBBHHH', 1234, 80, 1, 0, 0x20, 0x02, 8192, 0, 0)  # data offset 2
    s.send(eth + iphdr(40) + tcp)
    # RFC 1858 overlapping fragment: TCP at fragment offset 8 bytes rewrites the ports/flags.
    s.send(eth + iphdr(28, frag=1) + b'\x00\x50\x00\x00\x02\x00\x00\x00')
"#;

#[test]
fn malformed_frames_are_counted_and_dropped_while_flows_keep_working() {
    if !root_or_skip("malformed_frames_are_counted_and_dropped_while_flows_keep_working") {
        return;
    }
    let lab = lab();
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), 2);
    let mac = sh(&lab, "app", "cat /sys/class/net/tg-in/address").1;
    let mac = mac.trim().to_string();
    let script = lab.dir.join("malformed.py");
    std::fs::write(&script, MALFORMED_PY).expect("write script");
    let (sent, out) = sh(
        &lab,
        "node1",
        &format!("python3 {} {mac}", script.display()),
    );
    let (ok, after) = sh(&lab, "node1", "curl -s -m 5 http://203.0.113.10/");
    let t = app.stop();
    assert!(sent, "sender: {out}");
    assert!(
        ok && after.contains("peer=203.0.113.1:"),
        "flow after: {after}"
    );
    assert!(drops(&t, DropReason::Truncated) + drops(&t, DropReason::BadIpHeader) >= 10);
    assert!(drops(&t, DropReason::BadL4Header) >= 5);
    assert!(drops(&t, DropReason::FragmentOverlap) >= 5);
}

#[test]
fn run_refuses_a_missing_interface_and_leaves_nothing_behind() {
    if !root_or_skip("run_refuses_a_missing_interface_and_leaves_nothing_behind") {
        return;
    }
    let lab = lab();
    let ns = lab.ns("app");
    let (_, fwd_before) = sh(&lab, "app", "cat /proc/sys/net/ipv4/ip_forward");
    let mut cfg = lab_engine_config();
    cfg.interfaces[1].name = "nope0".into();
    let r = std::thread::spawn(move || {
        tollgate::io::netns::enter(&ns).expect("enter netns");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let engine = Arc::new(cfg.clone());
        tollgate::control::daemon::serve(
            &cfg,
            &Default::default(),
            |i, n| {
                WorkerKit::new()
                    .config(engine.clone())
                    .policy(lab_policy())
                    .index(i)
                    .of(n)
                    .seed(1)
                    .build()
            },
            stop,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .join()
    .expect("thread");
    let err = r.expect_err("must refuse");
    assert!(err.contains("nope0"), "{err}");
    // a clean run leaves no table and restores the sysctls
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), 1);
    let (_, fwd_during) = sh(&lab, "app", "cat /proc/sys/net/ipv4/ip_forward");
    let (ingress_during, ingress_rules) = sh(&lab, "app", "nft list table netdev tollgate");
    // the ingress drop leaves the host's own traffic to the kernel: it still answers a ping to
    // its inside address and a TCP connection to a socket of its own on it
    let (own_ping, _) = sh(&lab, "node1", "ping -c1 -W2 198.18.0.1");
    sh(
        &lab,
        "app",
        "timeout 5 socat -u TCP-LISTEN:2222,bind=198.18.0.1 - >/dev/null 2>&1 & sleep 0.3",
    );
    let (own_conn, _) = sh(
        &lab,
        "node1",
        "echo hi | timeout 5 socat -u STDIN TCP:198.18.0.1:2222,connect-timeout=2",
    );
    app.stop();
    let (table_left, _) = sh(&lab, "app", "nft list table inet tollgate");
    let (ingress_left, _) = sh(&lab, "app", "nft list table netdev tollgate");
    let (_, fwd_after) = sh(&lab, "app", "cat /proc/sys/net/ipv4/ip_forward");
    assert_eq!(fwd_during.trim(), "0");
    assert!(
        ingress_during,
        "the netdev ingress table exists while running"
    );
    assert!(
        ingress_rules.contains("fib daddr type unicast drop"),
        "{ingress_rules}"
    );
    assert!(
        own_ping,
        "the kernel answers a ping to the appliance's own address"
    );
    assert!(
        own_conn,
        "a TCP connection to the appliance's own address reaches the kernel"
    );
    assert!(!table_left, "nftables table removed at exit");
    assert!(!ingress_left, "netdev ingress table removed at exit");
    assert_eq!(fwd_before, fwd_after, "ip_forward restored");
}

/// Hairpinning (RFC 4787 REQ-9): an inside host reaches an inside server through the public
/// address of a DNAT rule; the appliance SNATs it too, so the answer comes back through it.
fn hairpin(workers: usize) {
    let lab = lab();
    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), workers);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(sh(&lab, "node1", "curl -s -m 3 http://203.0.113.1:8080/"));
    }
    let _t = app.stop();
    for (ok, text) in answers {
        assert!(
            ok && text.contains("peer=203.0.113.1:"),
            "hairpin: the inside server must answer and see the public address: {text}"
        );
    }
}

#[test]
fn hairpin_through_a_dnat_rule() {
    if !root_or_skip("hairpin_through_a_dnat_rule") {
        return;
    }
    hairpin(1);
    hairpin(2);
}

/// A namespace this test adds beyond the lab's internet router; deleted on every exit path.
struct FarSide(String);

impl Drop for FarSide {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn ip_cmd(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip");
    assert!(st.success(), "ip {args:?}");
}

/// Path MTU discovery through the NAT: a router beyond the appliance has a 1280-byte link, so
/// it answers node1's full-size DF segments (translated to 203.0.113.1) with ICMP
/// fragmentation-needed. The appliance must translate that error back to node1, whose TCP then
/// lowers its segment size and completes the upload; without it the upload stalls.
#[test]
fn pmtu_frag_needed_is_translated_back_to_the_inside_client() {
    if !root_or_skip("pmtu_frag_needed_is_translated_back_to_the_inside_client") {
        return;
    }
    let lab = lab();
    let far = FarSide(lab.ns("far"));
    let inet = lab.ns("inet");
    let (a, b) = (format!("{}fa", lab.ns("")), format!("{}fb", lab.ns("")));
    ip_cmd(&["netns", "add", &far.0]);
    ip_cmd(&[
        "link", "add", &a, "netns", &inet, "type", "veth", "peer", "name", &b, "netns", &far.0,
    ]);
    ip_cmd(&["-n", &inet, "addr", "add", "192.0.2.1/24", "dev", &a]);
    ip_cmd(&["-n", &inet, "link", "set", &a, "mtu", "1280", "up"]);
    ip_cmd(&["-n", &far.0, "addr", "add", "192.0.2.10/24", "dev", &b]);
    // Only the router's egress is small: the far host still advertises MSS 1460.
    ip_cmd(&["-n", &far.0, "link", "set", &b, "up"]);
    ip_cmd(&["-n", &far.0, "link", "set", "lo", "up"]);
    ip_cmd(&["-n", &far.0, "route", "add", "default", "via", "192.0.2.1"]);
    let st = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &inet,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .expect("sysctl");
    assert!(st.success());
    // A sink on the far side that counts the bytes it receives.
    let out = std::env::temp_dir().join(format!("{}pmtu.out", lab.ns("")));
    let out_s = out.to_string_lossy().into_owned();
    let mut sink = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &far.0,
            "socat",
            "-u",
            "TCP-LISTEN:9000,reuseaddr",
            &format!("CREATE:{out_s}"),
        ])
        .spawn()
        .expect("socat sink");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let app = Appliance::start(&lab, lab_engine_config(), lab_policy(), 1);
    let (ok, text) = sh(
        &lab,
        "node1",
        "ip route flush cache; head -c 400000 /dev/urandom > /tmp/tg-pmtu-$$ && \
         timeout 20 socat -u FILE:/tmp/tg-pmtu-$$ TCP:192.0.2.10:9000; r=$?; rm -f /tmp/tg-pmtu-$$; \
         ip route get 192.0.2.10; exit $r",
    );
    let _ = sink.wait();
    let t = app.stop();
    let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&out);
    assert!(ok, "upload through a 1280-byte link must complete: {text}");
    assert_eq!(got, 400_000, "bytes received beyond the small link");
    assert!(
        text.contains("mtu 1280"),
        "node1 learned the path MTU: {text}"
    );
    assert!(t.rt.forwarded > 0);
}
