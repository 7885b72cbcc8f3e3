//! `decide` and `decide_app` do not allocate: counted by `allocation-counter`'s global allocator.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tollgate::config::load_file;
use tollgate::policy::{proto, AppProto, Decision, FlowQuery, Policy};

#[test]
fn decisions_do_not_allocate() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/lab.toml");
    let l = load_file(&path).unwrap();
    let p = l.policy.clone();
    let q = |dst: [u8; 4], pr: u8, dport: u16| FlowQuery {
        src: Ipv4Addr::new(198, 18, 0, 10),
        dst: Ipv4Addr::from(dst),
        proto: pr,
        sport: 40000,
        dport,
    };
    let flows = [
        q([203, 0, 113, 5], proto::TCP, 443),
        q([198, 51, 100, 66], proto::UDP, 53),
        q([198, 51, 100, 7], proto::TCP, 443),
        q([203, 0, 113, 1], proto::TCP, 8080),
        q([192, 0, 2, 1], proto::ICMP, 0),
    ];
    let names = [Some("allowed.example"), Some("Other.Example."), None];
    let mut inspected = 0;
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            for f in &flows {
                if p.decide(f) == Decision::Inspect {
                    inspected += 1;
                    for n in names {
                        std::hint::black_box(p.decide_app(f, AppProto::Https, n));
                    }
                }
            }
        }
    });
    assert_eq!(info.count_total, 0, "decide/decide_app allocated");
    // TCP 443 to the lab servers and to 198.51.100.7: both only application rules can decide.
    assert_eq!(inspected, 2000);
}

#[test]
fn the_counter_sees_allocations() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(16));
    });
    assert!(info.count_total > 0);
}
