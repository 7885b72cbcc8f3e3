// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
//
// Tollgate's XDP program, one instance on each data interface (src/io/xdp.rs loads it).
//
// It sorts every received frame into one of two places:
// - the worker's AF_XDP socket bound to the frame's receive queue (bpf_redirect_map on
//   `xsks`): transit traffic (IPv4 not addressed to this host) and the frames the appliance
//   claims on its own addresses (return traffic to a SNAT port, echo replies and ICMP errors
//   about SNAT flows, DNAT rules' destinations and ports);
// - the kernel (XDP_PASS): ARP, IPv6, DHCP answers, broadcast and multicast, and whatever else
//   is addressed to this host (management, SSH, ping, the resolver's answers).
// This is the job of the `netdev` ingress drop under AF_PACKET, done before the kernel
// allocates anything: a frame for a worker never becomes an skb of the host's stack.
//
// A transit frame arriving on a queue with no socket is dropped and counted (COUNT_NO_SOCKET,
// `xdp_no_socket` in `tollgate stats`); a full socket ring is counted by the kernel per socket
// (XDP_STATISTICS, `rx_ring_drops`). Nothing here allocates, loops unbounded or takes a lock.
//
// Built by build.rs: clang -O2 -g -target bpf. No libbpf headers: the few declarations needed
// are below.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;

#define bswap16(x) __builtin_bswap16(x)
#define bswap32(x) __builtin_bswap32(x)

/* Flags of an address in `addrs` (the host's own addresses, as the kernel holds them). */
#define ADDR_LOCAL 1 /* any address of this host, broadcast ones included */
#define ADDR_SNAT 2  /* a SNAT address: its SNAT port range belongs to the workers */

/* Indexes of `counts`. */
#define COUNT_NO_SOCKET 0 /* for a worker, but no socket on the receive queue: dropped */
#define COUNT_TO_WORKER 1
#define COUNT_TO_KERNEL 2
#define COUNTS 3

#define MAX_CLAIMS 64
#define PROTO_TCP_BIT 1
#define PROTO_UDP_BIT 2

/* A DNAT rule's claim, one (source net, destination net, port range) each. */
struct claim {
	__u32 dst;      /* network byte order */
	__u32 dst_mask; /* network byte order */
	__u32 src;
	__u32 src_mask;
	__u16 lo; /* host byte order */
	__u16 hi;
	__u32 protos; /* PROTO_*_BIT */
};

struct conf {
	__u16 port_min; /* the SNAT port range, host byte order */
	__u16 port_max;
	__u32 n_claims;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CLAIMS);
	__type(key, __u32);
	__type(value, struct claim);
} claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conf);
} conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &what);
	if (c)
		*c += 1;
}

static __always_inline int to_kernel(void)
{
	count(COUNT_TO_KERNEL);
	return XDP_PASS;
}

static __always_inline int to_worker(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &q)) {
		count(COUNT_NO_SOCKET);
		return XDP_DROP;
	}
	count(COUNT_TO_WORKER);
	return bpf_redirect_map(&xsks, q, XDP_DROP);
}

static __always_inline int in_range(__u16 port_be, const struct conf *c)
{
	__u16 p = bswap16(port_be);
	return c && p >= c->port_min && p <= c->port_max;
}

/* A DNAT rule claims (saddr, daddr, proto, dport). */
static __always_inline int claimed(__u32 saddr, __u32 daddr, __u8 proto, __u16 dport_be,
				   const struct conf *c)
{
	if (!c)
		return 0;
	__u32 bit = proto == IPPROTO_TCP ? PROTO_TCP_BIT : PROTO_UDP_BIT;
	__u16 port = bswap16(dport_be);
	for (__u32 i = 0; i < MAX_CLAIMS; i++) {
		if (i >= c->n_claims)
			break;
		__u32 key = i; /* the counter stays in a register, for the verifier to bound */
		struct claim *k = bpf_map_lookup_elem(&claims, &key);
		if (!k)
			break;
		if ((k->protos & bit) && (daddr & k->dst_mask) == k->dst &&
		    (saddr & k->src_mask) == k->src && port >= k->lo && port <= k->hi)
			return 1;
	}
	return 0;
}

SEC("xdp")
int tollgate_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return to_kernel();
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bswap16(ETH_P_8021Q)) {
		if (l3 + 4 > end)
			return to_kernel();
		proto = *(__u16 *)(l3 + 2);
		l3 += 4;
	}
	if (proto != bswap16(ETH_P_IP))
		return to_kernel(); /* ARP, IPv6, LLDP, ... */
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return to_worker(ctx); /* malformed: the worker counts it by name */
	__u32 ihl = ip->ihl * 4;
	int first = (ip->frag_off & bswap16(0x1fff)) == 0;
	void *l4 = l3 + ihl;
	__u16 *ports = l4;
	int have_ports = first && ihl >= 20 && (void *)(ports + 2) <= end;
	/* a DHCP server's answer, also a unicast offer to an address not held yet */
	if (ip->protocol == IPPROTO_UDP && have_ports && ports[0] == bswap16(67) &&
	    ports[1] == bswap16(68))
		return to_kernel();
	__u32 daddr = ip->daddr;
	__u32 *flags = bpf_map_lookup_elem(&addrs, &daddr);
	if (!flags) {
		__u32 d = bswap32(daddr);
		if ((d >> 28) == 14 || d == 0xffffffff)
			return to_kernel(); /* multicast, limited broadcast */
		return to_worker(ctx);      /* transit */
	}
	if (!first || ihl < 20)
		return to_kernel(); /* a later fragment: the kernel reassembles what is its own */
	__u32 zero = 0;
	struct conf *c = bpf_map_lookup_elem(&conf, &zero);
	int snat = (*flags & ADDR_SNAT) != 0;
	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		if (!have_ports)
			return to_kernel();
		if (snat && in_range(ports[1], c))
			return to_worker(ctx);
		if (claimed(ip->saddr, daddr, ip->protocol, ports[1], c))
			return to_worker(ctx);
		return to_kernel();
	case IPPROTO_ICMP: {
		__u8 *icmp = l4;
		if (!snat || (void *)(icmp + 8) > end)
			return to_kernel();
		__u8 type = icmp[0];
		if (type == 0) /* echo reply: its identifier is a SNAT port */
			return to_worker(ctx);
		if (type != 3 && type != 4 && type != 5 && type != 11 && type != 12)
			return to_kernel();
		/* an error about a packet this address sent: the workers' if it left a SNAT port */
		struct iphdr *in = (void *)(icmp + 8);
		if ((void *)(in + 1) > end || in->saddr != daddr)
			return to_kernel();
		__u32 in_ihl = in->ihl * 4;
		if (in_ihl < 20)
			return to_kernel();
		__u16 *in_l4 = (void *)in + in_ihl;
		if ((void *)(in_l4 + 2) > end)
			return to_kernel();
		if (in->protocol == IPPROTO_TCP || in->protocol == IPPROTO_UDP)
			return in_range(in_l4[0], c) ? to_worker(ctx) : to_kernel();
		/* an echo request's identifier (bytes 4-5) is its SNAT port */
		if (in->protocol == IPPROTO_ICMP && (void *)(in_l4 + 3) <= end &&
		    *(__u8 *)in_l4 == 8)
			return in_range(in_l4[2], c) ? to_worker(ctx) : to_kernel();
		return to_kernel();
	}
	default:
		return to_kernel();
	}
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
