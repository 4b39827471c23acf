// SPDX-License-Identifier: GPL-2.0
/*
 * flow.bpf.c: record every TCP connection of the host.
 *
 * Two programs:
 *
 *  - flow_state (tp_btf/inet_sock_set_state) follows every TCP socket through
 *    its state changes. The first handshake state (CLOSE->SYN_SENT for an
 *    active open, ->SYN_RECV for a passive child) inserts a record into the
 *    open-connection map flow_open, keyed by the socket cookie. ESTABLISHED
 *    stamps the record with the established time and direction. CLOSE copies
 *    the record, fills in the final counters, sends it through the ring
 *    buffer flow_events and deletes it from flow_open.
 *
 *  - flow_refresh (raw_tp, never attached) walks flow_open and copies the live
 *    counters of each socket into its record. Userspace runs it with
 *    BPF_PROG_TEST_RUN right before it reads flow_open, so each batch can
 *    report every connection still open with its counters so far. Records
 *    whose socket is gone (it closed while no probe was attached: the map can
 *    be pinned and outlive the exporter) are deleted and counted.
 *
 *  - flow_seed (iter/task_file) walks every open file of every task on the
 *    host (all network namespaces), and for each TCP socket: inserts an open
 *    record for a connection the open map does not know (it predates the
 *    probe; flagged FLOW_F_SEEDED), and lists listening sockets and the seeded
 *    connections to userspace through the iterator's file (struct flow_sock).
 *
 * Times are CLOCK_TAI (bpf_ktime_get_tai_ns, kernel >= 6.1): a wall clock that
 * the kernel keeps in step with settimeofday/NTP, unlike ktime_get_ns.
 * Userspace subtracts the TAI-UTC offset to get UNIX time.
 *
 * The kernel/user ABI is flow.h; the kernel structs read here are CO-RE
 * definitions in kernel_types.h.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "kernel_types.h"
#include "flow.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FLOW_RINGBUF_BYTES);
} flow_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOW_OPEN_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, struct flow_open);
} flow_open SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOW_WORKLOAD_MAX_ENTRIES);
	__type(key, struct workload_addr_key);
	__type(value, __u32);
} flow_wl_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOW_WORKLOAD_MAX_ENTRIES);
	__type(key, struct workload_port_key);
	__type(value, __u32);
} flow_wl_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_CTR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} flow_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&flow_counters, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline void v4_mapped(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline int is_v4_mapped(const __u8 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0 && a[4] == 0 &&
	       a[5] == 0 && a[6] == 0 && a[7] == 0 && a[8] == 0 && a[9] == 0 &&
	       a[10] == 0xff && a[11] == 0xff;
}

/* 4-tuple, family (v4-mapped folded to AF_INET), cgroup and netns. */
static __always_inline void fill_identity(struct flow_event *ev, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET) {
		v4_mapped(ev->local_addr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		v4_mapped(ev->remote_addr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else {
		BPF_CORE_READ_INTO(&ev->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&ev->remote_addr, sk, __sk_common.skc_v6_daddr);
		if (is_v4_mapped(ev->local_addr) && is_v4_mapped(ev->remote_addr))
			family = AF_INET;
	}
	ev->family = family;
	/* Not skc_num: tcp_set_state(TCP_CLOSE) releases the port (inet_put_port
	 * zeroes inet_num) before the tracepoint fires. inet_sport keeps it. */
	ev->local_port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	ev->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	ev->cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	ev->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Counters so far, from struct tcp_sock. */
static __always_inline void fill_counters(struct flow_event *ev, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 sent = BPF_CORE_READ(tp, bytes_sent);
	__u64 retrans = BPF_CORE_READ(tp, bytes_retrans);
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	unsigned long skflags = BPF_CORE_READ(sk, __sk_common.skc_flags);

	/* bytes_sent counts every transmission of payload; report unique bytes. */
	ev->bytes_sent = sent >= retrans ? sent - retrans : 0;
	ev->bytes_retrans = retrans;
	/* bytes_received follows rcv_nxt, which also advances over the peer's FIN
	 * (one sequence number). tcp_fin() sets SOCK_DONE: take the FIN back out. */
	if (skflags & (1UL << SOCK_DONE)) {
		ev->flags |= FLOW_F_FIN_RECEIVED;
		if (received > 0)
			received -= 1;
	}
	ev->bytes_received = received;
	ev->segs_out = BPF_CORE_READ(tp, segs_out);
	ev->segs_in = BPF_CORE_READ(tp, segs_in);
	ev->total_retrans = BPF_CORE_READ(tp, total_retrans);
	ev->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
}

/*
 * Local workload: (local address, local port) first, then the local address.
 * A match replaces the previous id; no match keeps it, so a flow keeps the
 * workload it was attributed to after userspace removes the assignment (the
 * workload went away before its last connections closed).
 */
static __always_inline void resolve_workload(struct flow_event *ev)
{
	struct workload_port_key pk = {};
	struct workload_addr_key ak = {};
	__u32 *id;

	__builtin_memcpy(pk.addr, ev->local_addr, 16);
	pk.port = ev->local_port;
	id = bpf_map_lookup_elem(&flow_wl_port, &pk);
	if (id) {
		ev->workload_id = *id;
		ev->flags = (ev->flags & ~FLOW_F_WORKLOAD_BY_ADDR) | FLOW_F_WORKLOAD_BY_PORT;
		return;
	}
	__builtin_memcpy(ak.addr, ev->local_addr, 16);
	id = bpf_map_lookup_elem(&flow_wl_addr, &ak);
	if (id) {
		ev->workload_id = *id;
		ev->flags = (ev->flags & ~FLOW_F_WORKLOAD_BY_PORT) | FLOW_F_WORKLOAD_BY_ADDR;
	}
}

static __always_inline void on_open(struct sock *sk, int newstate, __u64 cookie)
{
	struct flow_open rec = {};

	if (bpf_map_lookup_elem(&flow_open, &cookie))
		return; /* simultaneous open: SYN_SENT -> SYN_RECV, keep the first */
	rec.sk = (__u64)sk;
	rec.ev.cookie = cookie;
	rec.ev.opened_ns = bpf_ktime_get_tai_ns();
	rec.ev.direction = newstate == TCP_SYN_SENT ? FLOW_DIR_CLIENT : FLOW_DIR_SERVER;
	rec.ev.state = newstate;
	rec.ev.flags = FLOW_F_OPEN;
	/* The local port of an active open may still be 0 here (it is picked
	 * after SYN_SENT); ESTABLISHED and CLOSE fill the identity again. */
	fill_identity(&rec.ev, sk);
	if (bpf_map_update_elem(&flow_open, &cookie, &rec, BPF_NOEXIST))
		count(FLOW_CTR_OPEN_MAP_FULL);
}

static __always_inline void on_established(struct sock *sk, int oldstate, __u64 cookie)
{
	struct flow_open *rec = bpf_map_lookup_elem(&flow_open, &cookie);
	__u64 now = bpf_ktime_get_tai_ns();

	if (!rec) {
		/* The handshake began before the program was attached. */
		struct flow_open fresh = {};

		fresh.sk = (__u64)sk;
		fresh.ev.cookie = cookie;
		fresh.ev.opened_ns = now;
		fresh.ev.flags = FLOW_F_OPEN;
		if (bpf_map_update_elem(&flow_open, &cookie, &fresh, BPF_NOEXIST)) {
			count(FLOW_CTR_OPEN_MAP_FULL);
			return;
		}
		rec = bpf_map_lookup_elem(&flow_open, &cookie);
		if (!rec)
			return;
	}
	rec->ev.established_ns = now;
	if (oldstate == TCP_SYN_SENT)
		rec->ev.direction = FLOW_DIR_CLIENT;
	else if (oldstate == TCP_SYN_RECV)
		rec->ev.direction = FLOW_DIR_SERVER;
	rec->ev.state = TCP_ESTABLISHED;
	fill_identity(&rec->ev, sk);
	resolve_workload(&rec->ev);
}

static __always_inline void on_close(struct sock *sk, int oldstate, __u64 cookie)
{
	struct flow_open *rec = bpf_map_lookup_elem(&flow_open, &cookie);
	struct flow_event *ev;

	/* A listener closing, or a socket that never left CLOSE: not a flow. */
	if (!rec && (oldstate == TCP_LISTEN || oldstate == TCP_CLOSE))
		return;

	ev = bpf_ringbuf_reserve(&flow_events, sizeof(*ev), 0);
	if (!ev) {
		count(FLOW_CTR_RINGBUF_DROPS);
		goto out;
	}
	if (rec) {
		__builtin_memcpy(ev, &rec->ev, sizeof(*ev));
		ev->flags &= ~(FLOW_F_OPEN | FLOW_F_STALE);
	} else {
		__builtin_memset(ev, 0, sizeof(*ev));
		ev->cookie = cookie;
		ev->flags = FLOW_F_NO_OPEN_RECORD;
	}
	if (ev->established_ns == 0 &&
	    (rec || oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV))
		ev->flags |= FLOW_F_NEVER_ESTABLISHED;
	ev->closed_ns = bpf_ktime_get_tai_ns();
	ev->state = oldstate;
	ev->sk_err = BPF_CORE_READ(sk, sk_err);
	fill_identity(ev, sk);
	fill_counters(ev, sk);
	resolve_workload(ev);
	bpf_ringbuf_submit(ev, 0);
out:
	if (rec)
		bpf_map_delete_elem(&flow_open, &cookie);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flow_state, struct sock *sk, int oldstate, int newstate)
{
	__u16 family;
	__u64 cookie;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;

	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_SYN_RECV:
		cookie = bpf_get_socket_cookie(sk);
		on_open(sk, newstate, cookie);
		break;
	case TCP_ESTABLISHED:
		cookie = bpf_get_socket_cookie(sk);
		on_established(sk, oldstate, cookie);
		break;
	case TCP_CLOSE:
		cookie = bpf_get_socket_cookie(sk);
		on_close(sk, oldstate, cookie);
		break;
	default:
		break;
	}
	return 0;
}

/*
 * Refresh one open record from its socket. The socket address was stored by
 * flow_state and is read with bpf_probe_read_kernel (BPF_CORE_READ), which
 * cannot fault. flow_state deletes the record when the socket reaches CLOSE,
 * before the socket is freed; a socket that closes while this runs is caught
 * by re-reading its cookie before and after the counters (TCP sockets are
 * SLAB_TYPESAFE_BY_RCU and this runs under RCU, so the memory stays a socket
 * or a free slab object whose cookie no longer matches).
 */
static long refresh_one(void *map, __u64 *key, struct flow_open *rec, void *ctx)
{
	struct sock *sk = (struct sock *)rec->sk;
	struct flow_event ev;
	__u64 cookie;

	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (cookie != *key)
		goto gone;
	__builtin_memcpy(&ev, &rec->ev, sizeof(ev));
	ev.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	/* The close was not seen (no probe attached when it happened): the
	 * socket is done, and so is the record. */
	if (ev.state == TCP_CLOSE)
		goto gone;
	/* The handshake completed while no probe was attached: established
	 * from now on, as far as this probe knows. */
	if (ev.established_ns == 0 && ev.state != TCP_SYN_SENT && ev.state != TCP_SYN_RECV) {
		ev.established_ns = bpf_ktime_get_tai_ns();
		ev.flags |= FLOW_F_SEEDED;
	}
	fill_identity(&ev, sk);
	fill_counters(&ev, sk);
	resolve_workload(&ev);
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (cookie != *key)
		goto gone;
	ev.flags = (ev.flags | FLOW_F_OPEN) & ~FLOW_F_STALE;
	__builtin_memcpy(&rec->ev, &ev, sizeof(ev));
	return 0;
gone:
	/* The socket behind the record is gone (its memory is a free slab
	 * object or another socket): the record can never be closed by
	 * flow_state, so it is removed here. */
	count(FLOW_CTR_REFRESH_STALE);
	bpf_map_delete_elem(&flow_open, key);
	return 0;
}

SEC("raw_tp/flow_refresh")
int flow_refresh(void *ctx)
{
	bpf_for_each_map_elem(&flow_open, refresh_one, (void *)0, 0);
	return 0;
}

/* States of a connection that was established and is not closed yet. */
static __always_inline int is_established_like(__u8 state)
{
	return state == TCP_ESTABLISHED || state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 ||
	       state == TCP_CLOSE_WAIT || state == TCP_LAST_ACK || state == TCP_CLOSING;
}

/*
 * Seed the open map from the sockets that exist now. Run by userspace through
 * an iterator file: at start (connections that predate the exporter) and at
 * every batch (listening sockets, for port-scoped heartbeats and for the
 * direction of seeded connections). Visits each socket once per task whose
 * file table holds it; the BPF_NOEXIST insert makes repeats harmless.
 */
SEC("iter/task_file")
int flow_seed(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct file *file = ctx->file;
	struct flow_open rec = {};
	struct flow_sock out = {};
	struct task_struct *task;
	struct socket *sock;
	struct sock *sk;
	__u16 family;
	__u64 cookie;
	__u8 state;
	long err;

	if (!file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_LISTEN) {
		out.kind = FLOW_SOCK_LISTENER;
		/* A wildcard IPv6 listener serves IPv4 too unless IPV6_V6ONLY is set. */
		if (family == AF_INET6 && BPF_CORE_READ_BITFIELD_PROBED(&sk->__sk_common, skc_ipv6only))
			out.flags |= FLOW_SOCK_F_V6ONLY;
		cookie = bpf_get_socket_cookie(sk);
		fill_identity(&rec.ev, sk);
	} else if (is_established_like(state)) {
		cookie = bpf_get_socket_cookie(sk);
		if (bpf_map_lookup_elem(&flow_open, &cookie))
			return 0; /* known: flow_state saw it open, or an earlier pass seeded it */
		rec.sk = (__u64)sk;
		rec.ev.cookie = cookie;
		rec.ev.opened_ns = bpf_ktime_get_tai_ns();
		rec.ev.established_ns = rec.ev.opened_ns;
		rec.ev.direction = FLOW_DIR_UNKNOWN;
		rec.ev.state = state;
		rec.ev.flags = FLOW_F_OPEN | FLOW_F_SEEDED;
		fill_identity(&rec.ev, sk);
		fill_counters(&rec.ev, sk);
		resolve_workload(&rec.ev);
		err = bpf_map_update_elem(&flow_open, &cookie, &rec, BPF_NOEXIST);
		if (err == -17 /* EEXIST: inserted meanwhile */)
			return 0;
		if (err) {
			count(FLOW_CTR_OPEN_MAP_FULL);
			return 0;
		}
		count(FLOW_CTR_SEEDED);
		out.kind = FLOW_SOCK_SEEDED;
	} else {
		return 0;
	}
	out.cookie = cookie;
	out.cgroup_id = rec.ev.cgroup_id;
	task = ctx->task;
	if (task)
		out.holder_cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	out.netns_ino = rec.ev.netns_ino;
	out.family = rec.ev.family;
	out.local_port = rec.ev.local_port;
	out.remote_port = rec.ev.remote_port;
	out.state = state;
	__builtin_memcpy(out.local_addr, rec.ev.local_addr, 16);
	__builtin_memcpy(out.remote_addr, rec.ev.remote_addr, 16);
	bpf_seq_write(seq, &out, sizeof(out));
	return 0;
}
