//! The classic BPF program that spreads received frames over the workers (PACKET_FANOUT_CBPF),
//! so that a frame reaches the worker that owns its flow without a hand-off.
//!
//! The kernel runs it for every frame of a fanout group and delivers the frame to member
//! `result % members`; members are the workers' sockets in the order they joined, which the
//! runtime makes the worker order. The program, first match wins:
//! - anything but IPv4 (ARP, IPv6): worker 0;
//! - a TCP or UDP datagram (not a fragment) to one of the SNAT addresses with a destination
//!   port in the SNAT range: the worker owning that port, as in
//!   [`crate::nat::NatConfig::owner_of_port`] (contiguous chunks of the range); with another
//!   port (DNAT from outside, or the host's own services): worker 0, where the engine keeps
//!   DNAT flows. An ICMP echo reply to a SNAT address goes by its id the same way;
//! - a TCP or UDP datagram (not a later fragment) from a DNAT target (address, port,
//!   protocol; any port when the rule keeps the original one), not to a SNAT address: worker
//!   0, where the engine keeps DNAT flows (the inside server's replies meet their flow);
//! - any datagram, fragments included, from an inside address (`inside`) and not to a SNAT
//!   address, unless the flow is one the engine leaves untranslated (one side inside, the other
//!   SNAT-exempt: see below): the worker picked by the **source address only** (Fibonacci
//!   hashing, [`crate::datapath::Worker::steer_worker`], which `Worker::owner_of` uses too;
//!   the engine hands over what still lands elsewhere), so every flow of an inside host meets
//!   one mapping table and one per-host quota (endpoint-independent mapping and
//!   `per_host_quota` hold across workers), and every fragment of its datagrams goes there;
//! - any other IPv4 datagram: a hash of the addresses and, if not a fragment, the ports that is
//!   the same in both directions (so an untranslated flow's two directions meet on one worker,
//!   as they do with PACKET_FANOUT_HASH), and that every fragment of a datagram shares. That
//!   covers untranslated flows (an inside host with a SNAT-exempt peer: `exempt(dst)` from the
//!   inside side, `exempt(src)` and `inside(dst)` from the other, so both directions take
//!   this rule), fragments and ICMP errors to the SNAT addresses (the engine hands those to
//!   their owner) and transit traffic from outside (dropped).
//!
//! [`InsideKey::AddrPort`] hashes an inside source's address and TCP/UDP port instead (kept
//! to measure the balance against; the engine's `owner_of` only knows the address hash, so the
//! daemon uses [`InsideKey::Addr`]).
//!
//! Offsets are relative to the network header (SKF_NET_OFF), so the link layer does not matter.
//! Every jump goes forward and lands inside the program, every scratch slot is stored before
//! it is read on every path, and the program stays far below the kernel's 4,096 instructions
//! (the tests check all three, as the kernel's `bpf_check_classic` does).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// One classic BPF instruction (the layout of `struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// classic BPF opcodes (linux/filter.h, linux/bpf_common.h)
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const MSH: u16 = 0xa0;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const AND: u16 = 0x50;
const RSH: u16 = 0x70;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const K: u16 = 0x00;
const X: u16 = 0x08;
const RET_A: u16 = 0x10;
const TAX: u16 = 0x00;

/// Loads relative to the network header.
const NET: u32 = (-0x0010_0000i32) as u32;
/// Ancillary load of skb->protocol (SKF_AD_OFF + SKF_AD_PROTOCOL).
const AD_PROTOCOL: u32 = (-0x1000i32) as u32;

/// Scratch slots: protocol, symmetric-hash temporary, source-hash temporary, source port,
/// fragment flag (non-zero: MF set or a non-zero offset).
const M_PROTO: u32 = 0;
const M_TMP: u32 = 1;
const M_KEY: u32 = 2;
const M_SPORT: u32 = 4;
const M_FRAG: u32 = 5;

/// Most SNAT addresses the program compares against (jump offsets are 8 bits).
pub const MAX_ADDRS: usize = 64;
/// Most inside or exempt prefixes the program tests a source against; with more, the inside
/// rule is left out (the engine's hand-off still brings each frame to its worker).
pub const MAX_PREFIXES: usize = 64;
/// Most DNAT targets the program tests a source against; with more, their check is left out
/// (hand-off to worker 0 instead).
pub const MAX_DNAT_TARGETS: usize = 64;

/// What an inside host's outbound frames are hashed by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InsideKey {
    /// The source address: all of a host's flows on one worker (its mappings and its quota).
    #[default]
    Addr,
    /// The source address and TCP/UDP source port (address only for other protocols and
    /// fragments): an endpoint's flows on one worker, a host's spread. For measurements.
    AddrPort,
}

/// What the steering program needs to know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steering {
    pub public_addrs: Vec<Ipv4Addr>,
    pub port_min: u16,
    pub port_max: u16,
    pub workers: usize,
    /// The configuration's `inside_prefixes`: outbound frames from them go by a hash of the
    /// source (empty: no inside rule).
    pub inside: Vec<Ipv4Net>,
    /// SNAT-exempt prefixes (`snat.exempt`): a flow between an inside host and one of them is
    /// untranslated and keeps the symmetric hash.
    pub exempt: Vec<Ipv4Net>,
    /// DNAT targets (address, port or 0 for any, protocol), as `Policy::dnat_targets`.
    pub dnat_targets: Vec<(Ipv4Addr, u16, u8)>,
    pub inside_key: InsideKey,
}

/// Jump targets while assembling: a label index.
#[derive(Clone, Copy)]
enum T {
    Next,
    L(usize),
}

struct Asm {
    code: Vec<(u16, T, T, u32)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn new() -> Self {
        Asm {
            code: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn here(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, T::Next, T::Next, k));
    }
    fn jmp(&mut self, code: u16, k: u32, jt: T, jf: T) {
        self.code.push((JMP | code | K, jt, jf, k));
    }
    fn ja(&mut self, l: usize) {
        self.code.push((JMP | JA, T::L(l), T::Next, 0));
    }
    /// Jumps to `yes` when the 32-bit word at `NET + off` lies in one of `nets`, else to `no`.
    /// The conditional jumps stay within the block (at most 3 x [`MAX_PREFIXES`] ahead); the
    /// exits are JA, which reach anywhere.
    fn member(&mut self, off: u32, nets: &[Ipv4Net], yes: usize, no: usize) {
        let hit = self.label();
        for n in nets {
            self.op(LD | W | ABS, NET + off);
            self.op(ALU | AND | K, u32::from(n.netmask()));
            self.jmp(JEQ, u32::from(n.network()), T::L(hit), T::Next);
        }
        self.ja(no);
        self.here(hit);
        self.ja(yes);
    }
    fn finish(self) -> Option<Vec<Insn>> {
        let mut out = Vec::with_capacity(self.code.len());
        for (pc, (code, jt, jf, k)) in self.code.iter().enumerate() {
            let off = |t: &T| -> Option<u32> {
                match t {
                    T::Next => Some(0),
                    T::L(l) => {
                        let at = self.labels.get(*l).copied().flatten()?;
                        at.checked_sub(pc + 1).map(|d| d as u32)
                    }
                }
            };
            let (t, f) = (off(jt)?, off(jf)?);
            if *code == JMP | JA {
                out.push(Insn {
                    code: *code,
                    jt: 0,
                    jf: 0,
                    k: t,
                });
            } else {
                if *code & 0x07 == JMP && (t > 255 || f > 255) {
                    return None;
                }
                out.push(Insn {
                    code: *code,
                    jt: t as u8,
                    jf: f as u8,
                    k: *k,
                });
            }
        }
        Some(out)
    }
}

impl Steering {
    /// The program, or None when it cannot be built (no workers to choose between, too many
    /// addresses, an empty port range).
    pub fn program(&self) -> Option<Vec<Insn>> {
        if self.workers < 2
            || self.workers > 0xffff
            || self.public_addrs.is_empty()
            || self.public_addrs.len() > MAX_ADDRS
            || self.port_min > self.port_max
        {
            return None;
        }
        let inside_rule = !self.inside.is_empty()
            && self.inside.len() <= MAX_PREFIXES
            && self.exempt.len() <= MAX_PREFIXES;
        let dnat = if self.dnat_targets.len() <= MAX_DNAT_TARGETS {
            &self.dnat_targets[..]
        } else {
            &[]
        };
        let n = self.workers as u32;
        let total = u32::from(self.port_max - self.port_min) + 1;
        let chunk = (total / n).max(1);
        let mut a = Asm::new();
        let [ipv4, public, nonpublic, tcpudp, last, from_inside] =
            std::array::from_fn(|_| a.label());
        let [fallback, hash_l4, hash_ports, hash_addrs, fold] = std::array::from_fn(|_| a.label());
        a.op(LD | H | ABS, AD_PROTOCOL);
        a.jmp(JEQ, 0x0800, T::L(ipv4), T::Next);
        a.op(RET | K, 0);
        a.here(ipv4);
        a.op(LD | B | ABS, NET + 9);
        a.op(ST, M_PROTO);
        // flags and fragment offset: MF or a non-zero offset = a fragment
        a.op(LD | H | ABS, NET + 6);
        a.op(ALU | AND | K, 0x3fff);
        a.op(ST, M_FRAG);
        a.op(LD | W | ABS, NET + 16);
        for (i, addr) in self.public_addrs.iter().enumerate() {
            let miss = if i + 1 == self.public_addrs.len() {
                T::L(nonpublic)
            } else {
                T::Next
            };
            a.jmp(JEQ, u32::from(*addr), T::L(public), miss);
        }
        // to a SNAT address: the port owner, or the symmetric hashes
        // (the hashes lie beyond the rules below: conditional jumps reach 255 ahead, so they
        // go through the JAs of `to_l4` and `to_addrs`)
        let [to_l4, to_addrs, zero, range] = std::array::from_fn(|_| a.label());
        a.here(public);
        a.op(LD | MEM, M_FRAG);
        a.jmp(JEQ, 0, T::Next, T::L(to_addrs));
        a.op(LD | MEM, M_PROTO);
        a.jmp(JEQ, 6, T::L(tcpudp), T::Next);
        a.jmp(JEQ, 17, T::L(tcpudp), T::Next);
        a.jmp(JEQ, 1, T::Next, T::L(to_l4));
        // an ICMP echo reply: its id (the SNAT range is also the id range)
        a.op(LDX | B | MSH, NET);
        a.op(LD | B | IND, NET);
        a.jmp(JEQ, 0, T::Next, T::L(to_l4));
        a.op(LD | H | IND, NET + 4);
        a.jmp(JGE, u32::from(self.port_min), T::L(range), T::L(zero));
        a.here(tcpudp);
        a.op(LDX | B | MSH, NET);
        a.op(LD | H | IND, NET + 2);
        a.jmp(JGE, u32::from(self.port_min), T::Next, T::L(zero));
        a.here(range);
        a.jmp(JGT, u32::from(self.port_max), T::L(zero), T::Next);
        a.op(ALU | SUB | K, u32::from(self.port_min));
        a.op(ALU | DIV | K, chunk);
        a.jmp(JGE, n, T::L(last), T::Next);
        a.op(RET | RET_A, 0);
        a.here(last);
        a.op(RET | K, n - 1);
        // another port: DNAT (or the host's own service), whose flows live on worker 0 (an
        // echo reply with another id: any worker)
        a.here(zero);
        a.op(RET | K, 0);
        a.here(to_l4);
        a.ja(hash_l4);
        a.here(to_addrs);
        a.ja(hash_addrs);
        // not to a SNAT address: DNAT replies, then inside sources
        a.here(nonpublic);
        if !dnat.is_empty() {
            // (a first fragment too, as the engine does: it carries the ports)
            let [dn, first] = std::array::from_fn(|_| a.label());
            a.op(LD | H | ABS, NET + 6);
            a.jmp(JSET, 0x1fff, T::Next, T::L(first));
            a.ja(from_inside);
            a.here(first);
            a.op(LD | MEM, M_PROTO);
            a.jmp(JEQ, 6, T::L(dn), T::Next);
            a.jmp(JEQ, 17, T::L(dn), T::Next);
            a.ja(from_inside);
            a.here(dn);
            a.op(LDX | B | MSH, NET);
            a.op(LD | H | IND, NET);
            a.op(ST, M_SPORT);
            for &(addr, port, proto) in dnat {
                let skip = a.label();
                a.op(LD | W | ABS, NET + 12);
                a.jmp(JEQ, u32::from(addr), T::Next, T::L(skip));
                if port != 0 {
                    a.op(LD | MEM, M_SPORT);
                    a.jmp(JEQ, u32::from(port), T::Next, T::L(skip));
                }
                a.op(LD | MEM, M_PROTO);
                a.jmp(JEQ, u32::from(proto), T::Next, T::L(skip));
                a.op(RET | K, 0);
                a.here(skip);
            }
        }
        a.here(from_inside);
        if inside_rule {
            let [src_in, chk_src, chk_dst, key] = std::array::from_fn(|_| a.label());
            a.member(12, &self.inside, src_in, fallback);
            a.here(src_in);
            // untranslated: to an exempt prefix, or from an exempt one to an inside host
            a.member(16, &self.exempt, fallback, chk_src);
            a.here(chk_src);
            a.member(12, &self.exempt, chk_dst, key);
            a.here(chk_dst);
            a.member(16, &self.inside, fallback, key);
            a.here(key);
            // Fibonacci hashing: the source address times STEER_MUL; with ports, the port
            // XORed into that product and multiplied again
            a.op(LD | W | ABS, NET + 12);
            a.op(ALU | MUL | K, crate::datapath::Worker::STEER_MUL);
            if self.inside_key == InsideKey::AddrPort {
                let [with_port, key_only, scale] = std::array::from_fn(|_| a.label());
                a.op(ST, M_KEY);
                a.op(LD | MEM, M_FRAG);
                a.jmp(JEQ, 0, T::Next, T::L(key_only));
                a.op(LD | MEM, M_PROTO);
                a.jmp(JEQ, 6, T::L(with_port), T::Next);
                a.jmp(JEQ, 17, T::L(with_port), T::L(key_only));
                a.here(with_port);
                a.op(LDX | B | MSH, NET);
                a.op(LD | H | IND, NET);
                a.op(MISC | TAX, 0);
                a.op(LD | MEM, M_KEY);
                a.op(ALU | XOR | X, 0);
                a.op(ALU | MUL | K, crate::datapath::Worker::STEER_MUL);
                a.ja(scale);
                a.here(key_only);
                a.op(LD | MEM, M_KEY);
                a.here(scale);
            }
            // the product's upper 16 bits scaled to the workers: the worker itself
            a.op(ALU | RSH | K, 16);
            a.op(ALU | MUL | K, n);
            a.op(ALU | RSH | K, 16);
            a.op(RET | RET_A, 0);
        }
        // today's rules: the symmetric hashes (fragments: addresses only)
        a.here(fallback);
        a.op(LD | MEM, M_FRAG);
        a.jmp(JEQ, 0, T::L(hash_l4), T::L(hash_addrs));
        // symmetric hash with ports, for TCP and UDP
        a.here(hash_l4);
        a.op(LD | MEM, M_PROTO);
        a.jmp(JEQ, 6, T::L(hash_ports), T::Next);
        a.jmp(JEQ, 17, T::L(hash_ports), T::L(hash_addrs));
        a.here(hash_ports);
        a.op(LDX | B | MSH, NET);
        a.op(LD | W | IND, NET); // sport << 16 | dport
        a.op(ST, M_TMP);
        a.op(ALU | RSH | K, 16);
        a.op(MISC | TAX, 0);
        a.op(LD | MEM, M_TMP);
        a.op(ALU | AND | K, 0xffff);
        a.op(ALU | XOR | X, 0); // sport ^ dport
        a.op(ST, M_TMP);
        a.op(LD | W | ABS, NET + 12);
        a.op(MISC | TAX, 0);
        a.op(LD | W | ABS, NET + 16);
        a.op(ALU | XOR | X, 0);
        a.op(MISC | TAX, 0);
        a.op(LD | MEM, M_TMP);
        a.op(ALU | XOR | X, 0);
        a.ja(fold);
        // symmetric hash of the addresses only (fragments, other protocols)
        a.here(hash_addrs);
        a.op(LD | W | ABS, NET + 12);
        a.op(MISC | TAX, 0);
        a.op(LD | W | ABS, NET + 16);
        a.op(ALU | XOR | X, 0);
        a.here(fold);
        a.op(MISC | TAX, 0);
        a.op(ALU | RSH | K, 16);
        a.op(ALU | XOR | X, 0);
        a.op(MISC | TAX, 0);
        a.op(ALU | RSH | K, 8);
        a.op(ALU | XOR | X, 0);
        a.op(RET | RET_A, 0);
        a.finish()
    }
}

/// A classic BPF interpreter for the subset [`Steering::program`] uses, over an Ethernet frame
/// (`ethertype` stands for skb->protocol, `frame[14..]` is the network header). For tests.
pub fn run(prog: &[Insn], ethertype: u16, frame: &[u8]) -> Option<u32> {
    let net = frame.get(14..)?;
    let load = |off: u32, size: usize| -> Option<u32> {
        if off == AD_PROTOCOL {
            return Some(u32::from(ethertype));
        }
        let rel = off.wrapping_sub(NET) as usize;
        let b = net.get(rel..rel + size)?;
        Some(b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)))
    };
    let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
    let mut pc = 0usize;
    for _ in 0..4096 {
        let i = *prog.get(pc)?;
        pc += 1;
        let size = match i.code & 0x18 {
            W => 4,
            H => 2,
            _ => 1,
        };
        match i.code & 0x07 {
            LD => match i.code & 0xe0 {
                ABS => a = load(i.k, size)?,
                IND => a = load(x.wrapping_add(i.k), size)?,
                MEM => a = m[i.k as usize & 15],
                _ => return None,
            },
            LDX => x = (load(i.k, 1)? & 0x0f) * 4,
            ST => m[i.k as usize & 15] = a,
            ALU => {
                let v = if i.code & X != 0 { x } else { i.k };
                a = match i.code & 0xf0 {
                    SUB => a.wrapping_sub(v),
                    MUL => a.wrapping_mul(v),
                    DIV => a.checked_div(v)?,
                    AND => a & v,
                    RSH => a.checked_shr(v).unwrap_or(0),
                    XOR => a ^ v,
                    _ => return None,
                };
            }
            JMP => {
                let taken = match i.code & 0xf0 {
                    JA => {
                        pc += i.k as usize;
                        continue;
                    }
                    JEQ => a == i.k,
                    JGT => a > i.k,
                    JGE => a >= i.k,
                    JSET => a & i.k != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return Some(if i.code & RET_A != 0 { a } else { i.k }),
            MISC => x = a,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{EngineConfig, Iface, IfaceRole, Worker};
    use crate::nat::NatConfig;
    use crate::policy::{AppProto, Decision, FlowQuery, Policy, RuleRef};
    use std::sync::Arc;

    const MF: u16 = 0x2000;
    const DF: u16 = 0x4000;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("address literal")
    }
    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("prefix literal")
    }

    /// An Ethernet + IPv4 frame with 8 bytes of transport header (ports, or ICMP type/code
    /// in `sport`'s bytes) and `payload` after it.
    fn frame_with(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        sport: u16,
        dport: u16,
        frag: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        frame_with(src, dst, proto, sport, dport, frag, &[])
    }

    /// An ICMP error from `src` to `dst` quoting the IPv4 packet of `quoted` (a frame).
    fn icmp_error(src: [u8; 4], dst: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        let q = &quoted[14..14 + 28];
        // type 3 (unreachable), code 3 (port), then the quoted header and 8 bytes
        frame_with(src, dst, 1, 0x0303, 0, 0, q)
    }

    /// Two SNAT addresses, the whole port range; inside 198.18.0.0/16 and 198.19.128.0/17;
    /// exempt 198.19.0.0/16 (so 198.19.128.0/17 is inside and exempt) and 192.0.2.0/24 (say,
    /// on-premises); DNAT targets 198.18.0.20 TCP 80 and 198.18.0.21 UDP any port.
    fn steering(workers: usize) -> Steering {
        Steering {
            public_addrs: vec![ip("203.0.113.1"), ip("203.0.113.2")],
            port_min: 1024,
            port_max: 65535,
            workers,
            inside: vec![net("198.18.0.0/16"), net("198.19.128.0/17")],
            exempt: vec![net("198.19.0.0/16"), net("192.0.2.0/24")],
            dnat_targets: vec![(ip("198.18.0.20"), 80, 6), (ip("198.18.0.21"), 0, 17)],
            inside_key: InsideKey::Addr,
        }
    }

    #[derive(Debug)]
    struct Targets(Vec<(Ipv4Addr, u16, u8)>);

    impl Policy for Targets {
        fn decide(&self, _: &FlowQuery) -> Decision {
            Decision::Deny { rule: None }
        }
        fn decide_app(&self, _: &FlowQuery, _: AppProto, _: Option<&str>) -> Decision {
            Decision::Deny { rule: None }
        }
        fn describe(&self, _: u32) -> Option<RuleRef<'_>> {
            None
        }
        fn dnat_targets(&self) -> &[(Ipv4Addr, u16, u8)] {
            &self.0
        }
    }

    /// An engine (worker 0 of `s.workers`) configured as `s`, for its `owner_of`.
    fn engine(s: &Steering) -> Worker {
        let iface = |name: &str, role, a: &str, p: &str| Iface {
            name: name.into(),
            role,
            addrs: vec![ip(a)],
            gateway: None,
            connected: vec![net(p)],
            mtu: 1500,
        };
        let cfg = EngineConfig {
            interfaces: vec![
                iface("tg-in", IfaceRole::Inside, "198.18.0.1", "198.18.0.0/24"),
                iface(
                    "tg-out",
                    IfaceRole::Outside,
                    "203.0.113.1",
                    "203.0.113.0/24",
                ),
            ],
            routes: vec![],
            inside_prefixes: s.inside.clone(),
            nat: NatConfig {
                public_addrs: s.public_addrs.clone(),
                port_min: s.port_min,
                port_max: s.port_max,
                exempt: s.exempt.clone(),
                ..NatConfig::default()
            },
            timeouts: crate::conntrack::Timeouts::default(),
            max_flows_per_worker: 1024,
            mss_clamp: None,
            icmp_on_exhaustion: false,
            icmp_source: ip("198.18.0.1"),
        };
        let policy: Arc<dyn Policy> = Arc::new(Targets(s.dnat_targets.clone()));
        Worker::new(Arc::new(cfg), policy, 0, s.workers, 7)
    }

    /// What the kernel's `bpf_check_classic` insists on, for the instructions used here: a
    /// length of 1..=4096, jumps forward and inside the program, known opcodes, no division by
    /// a constant 0, a return at the end, and every scratch slot stored on every path before
    /// it is loaded. Returns the first problem.
    fn kernel_checks(prog: &[Insn]) -> Result<(), String> {
        if prog.is_empty() || prog.len() > 4096 {
            return Err(format!("{} instructions", prog.len()));
        }
        if prog.last().map(|i| i.code & 0x07) != Some(RET) {
            return Err("does not end in a return".into());
        }
        // slots surely stored on entry to each instruction (None: not reached yet)
        let mut stored: Vec<Option<u16>> = vec![None; prog.len()];
        stored[0] = Some(0);
        for (pc, i) in prog.iter().enumerate() {
            let Some(mut m) = stored[pc] else { continue };
            let slot = 1u16 << (i.k & 15);
            let mut next = vec![pc + 1];
            match (i.code & 0x07, i.code) {
                (LD, c) if c & 0xe0 == MEM || c == LD | W | ABS || c == LD | H | ABS => {
                    if c & 0xe0 == MEM && (i.k > 15 || m & slot == 0) {
                        return Err(format!("{pc}: M[{}] loaded before it is stored", i.k));
                    }
                }
                (LD, c)
                    if [LD | B | ABS, LD | W | IND, LD | H | IND, LD | B | IND].contains(&c) => {}
                (LDX, c) if c == LDX | B | MSH => {}
                (ST, _) if i.k <= 15 => m |= slot,
                (ALU, c) if c & 0xf0 == DIV && c & X == 0 && i.k == 0 => {
                    return Err(format!("{pc}: division by 0"));
                }
                (ALU, c) if [SUB, MUL, DIV, AND, RSH, XOR].contains(&(c & 0xf0)) => {}
                (JMP, c) if c == JMP | JA => next = vec![pc + 1 + i.k as usize],
                (JMP, c) if [JEQ, JGT, JGE, JSET].contains(&(c & 0xf0)) => {
                    next = vec![pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf)];
                }
                (RET, _) => next.clear(),
                (MISC, c) if c == MISC | TAX => {}
                _ => return Err(format!("{pc}: opcode {:#x}", i.code)),
            }
            for t in next {
                let slot = stored
                    .get_mut(t)
                    .ok_or_else(|| format!("{pc}: jumps to {t}, past the end"))?;
                *slot = Some(slot.map_or(m, |s| s & m));
            }
        }
        Ok(())
    }

    fn program(s: &Steering) -> Vec<Insn> {
        let p = s.program().expect("program");
        kernel_checks(&p).unwrap_or_else(|e| panic!("{e}: {s:?}"));
        p
    }

    fn worker_of(p: &[Insn], f: &[u8], workers: usize) -> usize {
        run(p, 0x0800, f).expect("runs") as usize % workers
    }

    #[test]
    fn return_traffic_goes_to_the_port_owner() {
        let nat = NatConfig {
            public_addrs: steering(2).public_addrs,
            port_min: 1024,
            port_max: 65535,
            ..NatConfig::default()
        };
        for workers in [2usize, 3, 4, 7] {
            let p = program(&steering(workers));
            let w = engine(&steering(workers));
            for port in [1024u16, 1025, 20000, 32767, 33000, 50000, 65534, 65535] {
                for (proto, dst) in [(6u8, [203, 0, 113, 1]), (17, [203, 0, 113, 2])] {
                    // from outside, and hairpinned from an inside host
                    for src in [[198, 51, 100, 7], [198, 18, 0, 11]] {
                        let f = frame(src, dst, proto, 443, port, DF);
                        let got = worker_of(&p, &f, workers);
                        assert_eq!(
                            Some(got),
                            nat.owner_of_port(port, workers),
                            "{workers} {port}"
                        );
                        assert_eq!(w.owner_of(&f), Some(got), "{workers} {port}");
                    }
                }
                // an echo reply, by its id
                let mut f = frame([198, 51, 100, 7], [203, 0, 113, 2], 1, 0, 0, 0);
                f[38..40].copy_from_slice(&port.to_be_bytes());
                let got = worker_of(&p, &f, workers);
                assert_eq!(
                    Some(got),
                    nat.owner_of_port(port, workers),
                    "{workers} {port}"
                );
                assert_eq!(w.owner_of(&f), Some(got), "{workers} {port}");
            }
        }
    }

    /// Issue 21: every flow of an inside host, whatever its destination, protocol or ports,
    /// fragments included, meets one worker (one mapping table, one quota), the one the
    /// engine's `owner_of` names; and hosts spread over the workers.
    #[test]
    fn an_inside_hosts_flows_meet_on_one_worker() {
        for workers in [2usize, 3, 4, 7] {
            let s = steering(workers);
            let p = program(&s);
            let w = engine(&s);
            let mut hosts = vec![0usize; workers];
            for h in 0..256u32 {
                let src = Ipv4Addr::from(u32::from(ip("198.18.0.0")) + (h * 257 + 2) % 65536);
                let want = Worker::steer_worker(src, workers);
                hosts[want] += 1;
                let src = src.octets();
                let mut frames = Vec::new();
                for dst in [[203, 0, 113, 10], [203, 0, 113, 11], [198, 51, 100, 7]] {
                    for (sport, dport) in [(40000u16, 3478u16), (40000, 3479), (40001, 443)] {
                        frames.push(frame(src, dst, 17, sport, dport, 0));
                        frames.push(frame(src, dst, 6, sport, dport, DF));
                    }
                    frames.push(frame(src, dst, 1, 0x0800, 0x1234, 0)); // echo request
                    frames.push(frame(src, dst, 17, 40000, 3478, MF)); // first fragment
                    frames.push(frame(src, dst, 17, 0, 0, 0x00b9)); // a later one
                    frames.push(frame(src, dst, 17, 0, 0, MF | 0x0010));
                    frames.push(frame(src, dst, 47, 0, 0, 0)); // GRE
                }
                // to another inside host that is not exempt (SNATed: 198.18 is not exempt)
                frames.push(frame(src, [198, 18, 9, 9], 6, 40000, 22, 0));
                for f in &frames {
                    assert_eq!(worker_of(&p, f, workers), want, "{workers} workers: {f:?}");
                    assert_eq!(w.owner_of(f), Some(want), "{workers} workers: {f:?}");
                }
            }
            let fair = 256 / workers;
            assert!(
                hosts
                    .iter()
                    .all(|&n| n > fair * 2 / 3 && n < fair * 4 / 3 + 2),
                "{workers} workers: hosts per worker {hosts:?}"
            );
            // consecutive addresses (as a subnet hands them out) spread evenly
            let mut seq = vec![0usize; workers];
            for h in 1..=254u32 {
                let a = Ipv4Addr::from(u32::from(ip("198.18.0.0")) + h);
                seq[Worker::steer_worker(a, workers)] += 1;
            }
            let fair = 254 / workers;
            assert!(
                seq.iter()
                    .all(|&n| n + 2 + fair / 16 >= fair && n <= fair + 2 + fair / 16),
                "{workers} workers: 198.18.0.1-254 per worker {seq:?}"
            );
        }
    }

    /// A flow the engine does not translate (an inside host and a SNAT-exempt peer) keeps the
    /// symmetric hash: its two directions meet, whichever side is inside.
    #[test]
    fn untranslated_flows_meet_both_ways() {
        let p = program(&steering(2));
        let w = engine(&steering(2));
        let pairs = [
            ([198, 18, 0, 11], [192, 0, 2, 9]),     // inside, exempt outside
            ([198, 18, 0, 11], [198, 19, 200, 5]),  // inside, inside and exempt
            ([198, 19, 130, 1], [198, 19, 200, 5]), // both inside and exempt
        ];
        for (a, b) in pairs {
            let mut seen = [0usize; 2];
            for sport in 30000u16..30064 {
                for proto in [6u8, 17] {
                    let fwd = frame(a, b, proto, sport, 80, 0);
                    let rev = frame(b, a, proto, 80, sport, 0);
                    let (x, y) = (run(&p, 0x0800, &fwd), run(&p, 0x0800, &rev));
                    assert_eq!(x, y, "{a:?} {b:?} {sport}");
                    seen[x.expect("runs") as usize % 2] += 1;
                    assert_eq!(w.owner_of(&fwd), None);
                    assert_eq!(w.owner_of(&rev), None);
                }
            }
            // ports spread such flows over both workers
            assert!(seen[0] > 16 && seen[1] > 16, "{a:?} {b:?}: {seen:?}");
            // every fragment of a datagram (first one included) goes to one worker
            let first = run(&p, 0x0800, &frame(a, b, 17, 5000, 6000, MF)).expect("runs");
            let later = run(&p, 0x0800, &frame(a, b, 17, 0, 0, 0x00b9)).expect("runs");
            assert_eq!(first, later);
        }
    }

    /// DNAT flows live on worker 0 (`owner_of`): the frames from outside to a DNAT port and the
    /// inside server's replies go there straight from the fanout; the server's other flows are
    /// an inside host's like any other.
    #[test]
    fn dnat_flows_go_to_worker_zero() {
        for workers in [2usize, 3, 4] {
            let s = Steering {
                port_min: 40000,
                ..steering(workers)
            };
            let p = program(&s);
            let w = engine(&s);
            let remote = [198, 51, 100, 7];
            // from outside (and hairpinned from inside) to a port outside the SNAT range
            for src in [remote, [198, 18, 0, 11]] {
                for sport in 30000u16..30016 {
                    for (proto, port) in [(6u8, 8080u16), (17, 53), (6, 39999)] {
                        let f = frame(src, [203, 0, 113, 2], proto, sport, port, DF);
                        assert_eq!(worker_of(&p, &f, workers), 0, "{f:?}");
                        assert_eq!(w.owner_of(&f), Some(0), "{f:?}");
                    }
                }
            }
            let web = [198, 18, 0, 20];
            let udp_any = [198, 18, 0, 21];
            for f in [
                frame(web, remote, 6, 80, 50000, DF),
                frame(udp_any, remote, 17, 5353, 50000, 0),
                frame(udp_any, remote, 17, 9, 1, MF), // a first fragment carries the ports
            ] {
                assert_eq!(worker_of(&p, &f, workers), 0, "{f:?}");
                assert_eq!(w.owner_of(&f), Some(0), "{f:?}");
            }
            for (src, f) in [
                (web, frame(web, remote, 6, 8080, 50000, DF)),
                (web, frame(web, remote, 17, 80, 50000, 0)),
                (udp_any, frame(udp_any, remote, 6, 5353, 50000, 0)),
                (udp_any, frame(udp_any, remote, 17, 0, 0, 0x0020)), // later fragment
            ] {
                let want = Worker::steer_worker(Ipv4Addr::from(src), workers);
                assert_eq!(worker_of(&p, &f, workers), want, "{f:?}");
                assert_eq!(w.owner_of(&f), Some(want), "{f:?}");
            }
            // the server's port unreachable about a frame to it: the DNAT flow (a hand-off:
            // the program does not read quoted headers)
            let to_web = frame(remote, web, 6, 50000, 80, 0);
            assert_eq!(w.owner_of(&icmp_error(web, remote, &to_web)), Some(0));
            // an inside router's error about an inside host's frame: that host's worker
            let out = frame([198, 18, 0, 11], remote, 17, 4000, 53, 0);
            let want = Worker::steer_worker(ip("198.18.0.11"), workers);
            let err = icmp_error([198, 18, 3, 1], [198, 18, 0, 11], &out);
            assert_eq!(w.owner_of(&err), Some(want));
        }
    }

    /// The steering program and `owner_of` agree on every frame for which `owner_of` names a
    /// worker (random addresses from every class, protocols, fragments): such frames are never
    /// handed over. The exceptions, left to the hand-off: fragments to a SNAT address (the
    /// program hashes the addresses of every fragment alike; the engine sends a first one to
    /// its port's owner), ICMP errors to one (the program does not read the quoted header),
    /// and frames from a DNAT target to a SNAT address (below).
    #[test]
    fn the_program_and_owner_of_agree() {
        let classes: [&[[u8; 4]]; 5] = [
            &[
                [198, 18, 0, 11],
                [198, 18, 77, 3],
                [198, 18, 0, 20],
                [198, 18, 0, 21],
            ],
            &[[198, 19, 130, 1], [198, 19, 250, 9]],
            &[[198, 51, 100, 7], [203, 0, 113, 10]],
            &[[192, 0, 2, 9], [198, 19, 1, 1]],
            &[[203, 0, 113, 1], [203, 0, 113, 2]],
        ];
        let all: Vec<[u8; 4]> = classes.iter().flat_map(|c| c.iter().copied()).collect();
        let mut x = 0x2545_f491_u64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for workers in [2usize, 3, 4] {
            let s = steering(workers);
            let p = program(&s);
            let w = engine(&s);
            let mut named = 0;
            for _ in 0..20_000 {
                let (src, dst) = (all[rnd(all.len())], all[rnd(all.len())]);
                let proto = [6u8, 17, 1, 47][rnd(4)];
                let sport = if proto == 1 {
                    [0x0800, 0x0000, 0x0303][rnd(3)] // echo request, reply, unreachable
                } else {
                    [80u16, 0, 5353, 40000, 1000][rnd(5)]
                };
                let frag = [0u16, DF, MF, 0x00b9, MF | 0x10][rnd(5)];
                let mut f = frame(src, dst, proto, sport, rnd(65536) as u16, frag);
                if proto == 1 {
                    // an echo id
                    let id = rnd(65536) as u16;
                    f[38..40].copy_from_slice(&id.to_be_bytes());
                }
                let public = s.public_addrs.contains(&Ipv4Addr::from(dst));
                if public && frag & 0x3fff != 0 {
                    continue;
                }
                // From a DNAT target to a SNAT port: `owner_of` says 0, the program the port's
                // owner; the one real such frame answers a hairpinned DNAT flow, which lives on
                // worker 0 with a port from worker 0's slice, so both say 0 for it.
                let target = s.dnat_targets.iter().any(|t| t.0 == Ipv4Addr::from(src));
                if public && target {
                    continue;
                }
                if let Some(o) = w.owner_of(&f) {
                    named += 1;
                    assert_eq!(worker_of(&p, &f, workers), o, "{workers} workers: {f:?}");
                }
            }
            assert!(named > 4_000, "{named}");
        }
    }

    /// Address and port: an endpoint's flows meet, a host's endpoints spread.
    #[test]
    fn address_and_port_keeps_an_endpoint_together() {
        let s = Steering {
            inside_key: InsideKey::AddrPort,
            ..steering(2)
        };
        let p = program(&s);
        let src = [198, 18, 0, 11];
        let mut seen = [0usize; 2];
        for sport in 40000u16..40064 {
            let one = worker_of(&p, &frame(src, [203, 0, 113, 10], 17, sport, 3478, 0), 2);
            let two = worker_of(&p, &frame(src, [203, 0, 113, 11], 17, sport, 3479, 0), 2);
            assert_eq!(one, two);
            seen[one] += 1;
        }
        assert!(seen[0] > 16 && seen[1] > 16, "{seen:?}");
        // fragments and other protocols: by the address, as with InsideKey::Addr
        let by_addr = program(&steering(2));
        for f in [
            frame(src, [203, 0, 113, 10], 17, 0, 0, 0x00b9),
            frame(src, [203, 0, 113, 10], 1, 0x0800, 7, 0),
        ] {
            assert_eq!(run(&p, 0x0800, &f), run(&by_addr, 0x0800, &f));
        }
    }

    #[test]
    fn other_traffic_hashes_symmetrically() {
        // without inside prefixes: the program as it was before issue 21
        let p = program(&Steering {
            inside: vec![],
            dnat_targets: vec![],
            ..steering(2)
        });
        let mut seen = [0usize; 2];
        for sport in 30000u16..30064 {
            let a = [198, 18, 0, 11];
            let b = [203, 0, 113, 9];
            let fwd = run(&p, 0x0800, &frame(a, b, 6, sport, 80, 0)).expect("runs");
            let rev = run(&p, 0x0800, &frame(b, a, 6, 80, sport, 0)).expect("runs");
            assert_eq!(fwd, rev);
            seen[fwd as usize % 2] += 1;
        }
        // ports spread flows over both workers
        assert!(seen[0] > 8 && seen[1] > 8, "{seen:?}");
        // every fragment of a datagram (first one included) goes to one worker, also to a
        // SNAT address with the inside rule
        let a = [198, 18, 0, 11];
        let b = [203, 0, 113, 1];
        for p in [&p, &program(&steering(2))] {
            let first = run(p, 0x0800, &frame(a, b, 17, 5000, 6000, MF)).expect("runs");
            let later = run(p, 0x0800, &frame(a, b, 17, 0, 0, 0x00b9)).expect("runs");
            assert_eq!(first, later);
        }
        // another protocol to a public address: hashed
        assert!(run(&p, 0x0800, &frame(a, b, 1, 0, 0, 0)).is_some());
        assert!(run(&p, 0x0800, &frame(a, b, 47, 0, 0, 0)).is_some());
        // not IPv4: worker 0
        assert_eq!(run(&p, 0x0806, &frame(a, b, 6, 1, 2, 0)), Some(0));
    }

    #[test]
    fn no_program_without_a_choice() {
        assert!(steering(1).program().is_none());
        let many = Steering {
            public_addrs: (0..=MAX_ADDRS as u32).map(Ipv4Addr::from).collect(),
            ..steering(2)
        };
        assert!(many.program().is_none());
    }

    /// The largest configurations still give a program the kernel takes, far below its 4,096
    /// instructions; beyond the caps the inside or DNAT rule is left out, not the program.
    #[test]
    fn big_configurations_stay_verifiable() {
        let prefixes = |base: u32, n: usize| -> Vec<Ipv4Net> {
            (0..n as u32)
                .map(|i| Ipv4Net::new(Ipv4Addr::from(base + (i << 8)), 24).expect("prefix"))
                .collect()
        };
        let inside_base = u32::from(ip("198.18.0.0"));
        let biggest = Steering {
            public_addrs: (0..MAX_ADDRS as u32)
                .map(|i| Ipv4Addr::from(u32::from(ip("203.0.113.0")) + i))
                .collect(),
            inside: prefixes(inside_base, MAX_PREFIXES),
            exempt: prefixes(u32::from(ip("198.19.0.0")), MAX_PREFIXES),
            dnat_targets: (0..MAX_DNAT_TARGETS as u32)
                .map(|i| (Ipv4Addr::from(inside_base + 20 + i), 80, 6))
                .collect(),
            inside_key: InsideKey::AddrPort,
            ..steering(8)
        };
        let p = program(&biggest);
        assert!(p.len() < 2048, "{} instructions", p.len());
        // the last inside prefix and the last DNAT target still count
        let last_host = Ipv4Addr::from(inside_base + ((MAX_PREFIXES as u32 - 1) << 8) + 9);
        let f = frame(last_host.octets(), [198, 51, 100, 7], 1, 0x0800, 1, 0);
        let st = Steering {
            inside_key: InsideKey::Addr,
            ..biggest.clone()
        };
        assert_eq!(
            worker_of(&program(&st), &f, 8),
            Worker::steer_worker(last_host, 8)
        );
        let last_target = Ipv4Addr::from(inside_base + 20 + MAX_DNAT_TARGETS as u32 - 1);
        let f = frame(last_target.octets(), [198, 51, 100, 7], 6, 80, 5000, 0);
        assert_eq!(worker_of(&p, &f, 8), 0);
        // one more prefix or target: built without that rule (the hand-off covers it)
        let plain = program(&Steering {
            inside: vec![],
            dnat_targets: vec![],
            ..biggest.clone()
        });
        let over = program(&Steering {
            inside: prefixes(inside_base, MAX_PREFIXES + 1),
            dnat_targets: vec![],
            ..biggest.clone()
        });
        let from_inside = frame([198, 18, 0, 11], [198, 51, 100, 7], 6, 4000, 80, 0);
        assert_eq!(
            run(&over, 0x0800, &from_inside),
            run(&plain, 0x0800, &from_inside)
        );
        let too_many = Steering {
            dnat_targets: vec![(ip("198.18.0.20"), 80, 6); MAX_DNAT_TARGETS + 1],
            ..steering(2)
        };
        let p = program(&too_many);
        let reply = frame([198, 18, 0, 20], [198, 51, 100, 7], 6, 80, 5000, 0);
        assert_eq!(
            worker_of(&p, &reply, 2),
            Worker::steer_worker(ip("198.18.0.20"), 2)
        );
    }

    /// The checks above catch what the kernel would refuse.
    #[test]
    fn the_kernel_checks_catch_bad_programs() {
        let ret = Insn {
            code: RET | K,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let ld_mem = Insn {
            code: LD | MEM,
            jt: 0,
            jf: 0,
            k: 3,
        };
        let st = Insn {
            code: ST,
            jt: 0,
            jf: 0,
            k: 3,
        };
        let jeq = |jt, jf| Insn {
            code: JMP | JEQ | K,
            jt,
            jf,
            k: 1,
        };
        assert!(kernel_checks(&[ret]).is_ok());
        assert!(kernel_checks(&[ld_mem, ret]).is_err());
        assert!(kernel_checks(&[st, ld_mem, ret]).is_ok());
        // stored on one path only
        assert!(kernel_checks(&[jeq(0, 1), st, ld_mem, ret]).is_err());
        assert!(kernel_checks(&[jeq(0, 5), ret]).is_err());
        assert!(kernel_checks(&[st]).is_err());
    }
}
