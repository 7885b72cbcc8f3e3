//! Why a packet was dropped. Every variant is a counter; `as_str` is its metric label.

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $name:ident = $label:literal, )*) => {
        /// Why a packet was not forwarded. Each reason is counted separately.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $name, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (size of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case label used in metrics, logs and `explain`.
            pub const fn as_str(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

drop_reasons! {
    /// The frame is shorter than the headers it claims.
    Truncated = "truncated",
    /// IPv4 version, IHL or total length is wrong.
    BadIpHeader = "bad_ip_header",
    /// The IPv4 header checksum does not verify.
    BadIpChecksum = "bad_ip_checksum",
    /// An IPv4 option list that does not parse: an option length below its minimum or past
    /// the header, an option type with no room for its length (RFC 791).
    BadIpOptions = "bad_ip_options",
    /// An IPv4 loose or strict source route option (LSRR 131, SSRR 137): the sender, not the
    /// routing tables, would choose the path (RFC 7126 4.3, 4.4: dropped by default).
    IpSourceRoute = "ip_source_route",
    /// TCP data offset, UDP length or ICMP header is wrong.
    BadL4Header = "bad_l4_header",
    /// A TCP flag combination no connection sends: SYN with FIN or RST, FIN without ACK, or
    /// none of SYN, ACK and RST (NULL, FIN and Xmas scans, OS fingerprinting).
    TcpBadFlags = "tcp_bad_flags",
    /// The frame's offload metadata (GSO kind and size, partial-checksum offsets) disagrees
    /// with its headers.
    BadOffload = "bad_offload",
    /// IPv6 is recognised but not forwarded (no IPv6 NAT; see README).
    Ipv6 = "ipv6_not_forwarded",
    /// An ethertype the appliance does not forward.
    UnsupportedEthertype = "unsupported_ethertype",
    /// An IP protocol the appliance does not translate (only TCP, UDP and ICMP are).
    UnsupportedProtocol = "unsupported_protocol",
    /// An ICMP type that is neither echo nor a translatable error.
    UnsupportedIcmp = "unsupported_icmp",
    /// A non-first fragment whose first fragment was not seen (or has expired).
    FragmentNoFlow = "fragment_no_flow",
    /// A fragment that overlaps the transport header (RFC 1858 tiny-fragment attack).
    FragmentOverlap = "fragment_overlap",
    /// TTL reached zero here (an ICMP time-exceeded was sent when possible).
    TtlExceeded = "ttl_exceeded",
    /// No route toward the destination.
    NoRoute = "no_route",
    /// The packet would need fragmenting but has DF set (a frag-needed was sent).
    FragNeeded = "frag_needed",
    /// A new flow from a source that is not in the inside prefixes.
    UnknownSource = "unknown_source",
    /// Inbound traffic that matches no tracked flow and no DNAT rule.
    Unsolicited = "unsolicited",
    /// A TCP packet without SYN that matches no flow (often asymmetric routing).
    TcpNonSyn = "tcp_non_syn",
    /// A TCP packet that is invalid for the flow's state.
    TcpInvalid = "tcp_invalid",
    /// An ICMP error whose embedded packet matches no flow.
    IcmpErrorNoFlow = "icmp_error_no_flow",
    /// A deny rule matched.
    RuleDeny = "rule_deny",
    /// No rule matched: default deny.
    DefaultDeny = "default_deny",
    /// An application rule denied the FQDN.
    AppDeny = "app_deny",
    /// A TLS flow without SNI that no network rule allows.
    NoSni = "no_sni",
    /// The first payload could not be read within the per-flow or global inspection budget.
    InspectBudget = "inspect_budget",
    /// A held flow resent bytes at sequence numbers (or QUIC CRYPTO offsets) already received,
    /// with different content: an attempt to show the firewall and the server different names.
    InspectOverlapMismatch = "inspect_overlap_mismatch",
    /// A packet of a held flow that the server might not take as the firewall would read it (a
    /// bad TCP or UDP checksum, an IP fragment): dropped, not held; the flow stays held.
    InspectUnverifiable = "inspect_unverifiable",
    /// No SNAT port is left on any public address.
    OutOfPorts = "out_of_ports",
    /// The inside host holds its whole per-host port quota.
    HostQuota = "host_quota",
    /// The flow table is full.
    MaxFlows = "max_flows",
    /// The flow was cut because a reloaded policy no longer allows it.
    PolicyRevoked = "policy_revoked",
}
