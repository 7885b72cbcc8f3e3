//! The classic BPF program that spreads received frames over the workers (PACKET_FANOUT_CBPF),
//! so that return traffic reaches the worker that owns its SNAT port without a hand-off.
//!
//! The kernel runs it for every frame of a fanout group and delivers the frame to member
//! `result % members`; members are the workers' sockets in the order they joined, which the
//! runtime makes the worker order. The program:
//! - a TCP or UDP first fragment (or unfragmented datagram) to one of the SNAT addresses with a
//!   destination port in the SNAT range: the worker owning that port, as in
//!   [`crate::nat::NatConfig::owner_of_port`] (contiguous chunks of the range);
//! - any other IPv4 datagram: a hash of the addresses and, if not a fragment, the ports that is
//!   the same in both directions (so an untranslated flow's two directions meet on one worker,
//!   as they do with PACKET_FANOUT_HASH), and that every fragment of a datagram shares;
//! - anything else (ARP, IPv6): worker 0.
//!
//! Offsets are relative to the network header (SKF_NET_OFF), so the link layer does not matter.

use std::net::Ipv4Addr;

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

/// Most SNAT addresses the program compares against (jump offsets are 8 bits).
pub const MAX_ADDRS: usize = 64;

/// What the steering program needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    pub public_addrs: Vec<Ipv4Addr>,
    pub port_min: u16,
    pub port_max: u16,
    pub workers: usize,
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
            || self.public_addrs.is_empty()
            || self.public_addrs.len() > MAX_ADDRS
            || self.port_min > self.port_max
        {
            return None;
        }
        let n = self.workers as u32;
        let total = u32::from(self.port_max - self.port_min) + 1;
        let chunk = (total / n).max(1);
        let mut a = Asm::new();
        let (ret0, nofrag, public, tcpudp, last, hash_l4, hash_ports, hash_addrs, fold) = (
            a.label(),
            a.label(),
            a.label(),
            a.label(),
            a.label(),
            a.label(),
            a.label(),
            a.label(),
            a.label(),
        );
        a.op(LD | H | ABS, AD_PROTOCOL);
        a.jmp(JEQ, 0x0800, T::Next, T::L(ret0));
        // flags and fragment offset: MF or a non-zero offset = a fragment
        a.op(LD | H | ABS, NET + 6);
        a.jmp(JSET, 0x3fff, T::L(hash_addrs), T::L(nofrag));
        a.here(nofrag);
        a.op(LD | B | ABS, NET + 9);
        a.op(ST, 0); // M[0] = protocol
        a.op(LD | W | ABS, NET + 16);
        for (i, addr) in self.public_addrs.iter().enumerate() {
            let miss = if i + 1 == self.public_addrs.len() {
                T::L(hash_l4)
            } else {
                T::Next
            };
            a.jmp(JEQ, u32::from(*addr), T::L(public), miss);
        }
        a.here(public);
        a.op(LD | MEM, 0);
        a.jmp(JEQ, 6, T::L(tcpudp), T::Next);
        a.jmp(JEQ, 17, T::L(tcpudp), T::L(hash_l4));
        a.here(tcpudp);
        a.op(LDX | B | MSH, NET);
        a.op(LD | H | IND, NET + 2);
        a.jmp(JGE, u32::from(self.port_min), T::Next, T::L(hash_l4));
        a.jmp(JGT, u32::from(self.port_max), T::L(hash_l4), T::Next);
        a.op(ALU | SUB | K, u32::from(self.port_min));
        a.op(ALU | DIV | K, chunk);
        a.jmp(JGE, n, T::L(last), T::Next);
        a.op(RET | RET_A, 0);
        a.here(last);
        a.op(RET | K, n - 1);
        // symmetric hash with ports, for TCP and UDP
        a.here(hash_l4);
        a.op(LD | MEM, 0);
        a.jmp(JEQ, 6, T::L(hash_ports), T::Next);
        a.jmp(JEQ, 17, T::L(hash_ports), T::L(hash_addrs));
        a.here(hash_ports);
        a.op(LDX | B | MSH, NET);
        a.op(LD | W | IND, NET); // sport << 16 | dport
        a.op(ST, 1);
        a.op(ALU | RSH | K, 16);
        a.op(MISC | TAX, 0);
        a.op(LD | MEM, 1);
        a.op(ALU | AND | K, 0xffff);
        a.op(ALU | XOR | X, 0); // sport ^ dport
        a.op(ST, 1);
        a.op(LD | W | ABS, NET + 12);
        a.op(MISC | TAX, 0);
        a.op(LD | W | ABS, NET + 16);
        a.op(ALU | XOR | X, 0);
        a.op(MISC | TAX, 0);
        a.op(LD | MEM, 1);
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
        a.here(ret0);
        a.op(RET | K, 0);
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
    use crate::nat::NatConfig;

    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn steering(workers: usize) -> Steering {
        Steering {
            public_addrs: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
            port_min: 1024,
            port_max: 65535,
            workers,
        }
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
            let p = steering(workers).program().expect("program");
            for port in [1024u16, 1025, 20000, 32767, 33000, 50000, 65534, 65535] {
                for (proto, dst) in [(6u8, [203, 0, 113, 1]), (17, [203, 0, 113, 2])] {
                    let f = frame([198, 51, 100, 7], dst, proto, 443, port, 0x4000);
                    let got = run(&p, 0x0800, &f).expect("runs") as usize % workers;
                    assert_eq!(
                        Some(got),
                        nat.owner_of_port(port, workers),
                        "{workers} {port}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_traffic_hashes_symmetrically() {
        let p = steering(2).program().expect("program");
        let mut seen = [0usize; 2];
        for sport in 30000u16..30064 {
            let a = [198, 18, 0, 11];
            let b = [192, 0, 2, 9];
            let fwd = run(&p, 0x0800, &frame(a, b, 6, sport, 80, 0)).expect("runs");
            let rev = run(&p, 0x0800, &frame(b, a, 6, 80, sport, 0)).expect("runs");
            assert_eq!(fwd, rev);
            seen[fwd as usize % 2] += 1;
        }
        // ports spread flows over both workers
        assert!(seen[0] > 8 && seen[1] > 8, "{seen:?}");
        // every fragment of a datagram (first one included) goes to one worker
        let a = [198, 18, 0, 11];
        let b = [203, 0, 113, 1];
        let first = run(&p, 0x0800, &frame(a, b, 17, 5000, 6000, 0x2000)).expect("runs");
        let later = run(&p, 0x0800, &frame(a, b, 17, 0, 0, 0x00b9)).expect("runs");
        assert_eq!(first, later);
        // a port outside the SNAT range or another protocol to a public address: hashed
        let small = steering(2);
        let p2 = Steering {
            port_min: 40000,
            ..small
        }
        .program()
        .expect("program");
        assert!(run(&p2, 0x0800, &frame(a, b, 6, 1234, 8080, 0)).is_some());
        assert!(run(&p2, 0x0800, &frame(a, b, 1, 0, 0, 0)).is_some());
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
}
