//! The DNS answer reader on arbitrary datagrams: the first byte picks the query name, the rest
//! is taken as the answer (its id and question forced to the query's half the time, so the
//! record parser is reached).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::wire::dns::{write_query, Response};

const NAMES: [&str; 3] = ["api.example", "a.b.c.d.example", "x"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut q = [0u8; 64];
    let Ok(n) = write_query(&mut q, 0x4242, NAMES[usize::from(pick) % NAMES.len()]) else {
        return;
    };
    let q = &q[..n];
    let mut m = [0u8; 1500];
    let len = rest.len().min(m.len());
    m[..len].copy_from_slice(&rest[..len]);
    let mut len = len;
    if pick & 0x80 != 0 && len >= n {
        m[..n].copy_from_slice(q);
        m[2] |= 0x80;
        m[2] &= !0x02;
    } else if pick & 0x80 != 0 {
        len = n;
        m[..n].copy_from_slice(q);
        m[2] |= 0x80;
    }
    if let Ok(r) = Response::parse(&m[..len], q) {
        // At most one record per 16 bytes after the question (owner pointer + fixed + A).
        let max = len.saturating_sub(n) / 14 + 1;
        assert!(r.addresses().count() <= max);
    }
});
