// XDP sink for benches/throughput.sh (LAYOUT=onecpu): the server's veth drops every IPv4 frame
// at the driver, before any skb, socket or conntrack, so receiving costs next to nothing; ARP
// (and anything not IPv4) goes on to the kernel, so the appliance can resolve the server's
// address. What was dropped is counted by veth itself: `ethtool -S eth0` shows per-queue
// rx_queue_<n>_xdp_drops. No libbpf headers: the few definitions it needs are here.
// Build: clang -O2 -target bpf -c count_drop.bpf.c -o count_drop.o
// Attach: ip link set dev eth0 xdpdrv obj count_drop.o sec xdp

#define SEC(name) __attribute__((section(name), used))

struct xdp_md {
	unsigned int data;
	unsigned int data_end;
	unsigned int data_meta;
	unsigned int ingress_ifindex;
	unsigned int rx_queue_index;
	unsigned int egress_ifindex;
};

enum { XDP_ABORTED = 0, XDP_DROP = 1, XDP_PASS = 2 };

SEC("xdp")
int count_drop(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(unsigned long)ctx->data;
	unsigned char *end = (unsigned char *)(unsigned long)ctx->data_end;

	if (data + 14 > end)
		return XDP_PASS;
	// EtherType 0x0800 (IPv4): dropped and counted; anything else (ARP) passed
	if (data[12] == 0x08 && data[13] == 0x00)
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
