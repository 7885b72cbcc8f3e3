//! The TLS SNI and HTTP Host readers on arbitrary first bytes of a stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::wire::host::{request_host, HostResult};
use tollgate::wire::sni::{client_hello_sni, SniResult};

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 256];
    if let SniResult::Sni { len, .. } = client_hello_sni(data, &mut out) {
        assert!((1..=253).contains(&len));
    }
    if let HostResult::Host(h) = request_host(data) {
        assert!(!h.is_empty() && h.len() <= data.len());
    }
});
