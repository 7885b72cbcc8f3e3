use std::net::Ipv4Addr;

/// A 5-tuple exactly as a packet carries it on arrival, packed into two words so hashing and
/// comparison are a few instructions.
///
/// For ICMP echo the identifier stands in for a port: an echo request is keyed
/// `(src, dst, id, 0)` and an echo reply `(src, dst, 0, id)`, so a request and the reply it
/// draws are each other's swap, like a TCP or UDP exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    addrs: u64,
    rest: u64,
}

impl FlowKey {
    /// The all-zero key (never a real packet's: port 0 and protocol 0).
    pub const ZERO: FlowKey = FlowKey { addrs: 0, rest: 0 };

    #[inline]
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> Self {
        FlowKey {
            addrs: (u64::from(u32::from(src)) << 32) | u64::from(u32::from(dst)),
            rest: (u64::from(sport) << 32) | (u64::from(dport) << 16) | u64::from(proto),
        }
    }
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from((self.addrs >> 32) as u32)
    }
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addrs as u32)
    }
    #[inline]
    pub fn sport(&self) -> u16 {
        (self.rest >> 32) as u16
    }
    #[inline]
    pub fn dport(&self) -> u16 {
        (self.rest >> 16) as u16
    }
    #[inline]
    pub fn proto(&self) -> u8 {
        self.rest as u8
    }
    /// The tuple of a packet sent back the other way.
    #[inline]
    pub fn reversed(&self) -> Self {
        FlowKey::new(
            self.dst(),
            self.src(),
            self.dport(),
            self.sport(),
            self.proto(),
        )
    }
    #[inline]
    pub(crate) fn words(&self) -> (u64, u64) {
        (self.addrs, self.rest)
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto() {
            1 => "icmp",
            6 => "tcp",
            17 => "udp",
            _ => "ip",
        };
        write!(
            f,
            "{p} {}:{} -> {}:{}",
            self.src(),
            self.sport(),
            self.dst(),
            self.dport()
        )
    }
}
