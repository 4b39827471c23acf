/* SPDX-License-Identifier: Apache-2.0 */
/*
 * flow.h: the one kernel/user ABI of flowmap-exporter.
 *
 * Everything that crosses the kernel/user boundary is declared here: the flow
 * record that leaves through the ring buffer (and that lives in the
 * open-connection map), the keys of the two workload-assignment maps, the
 * indices of the per-CPU counter array, the flag bits and the map names.
 *
 * The Rust side mirrors these structs in exporter/src/abi.rs; a unit test there
 * compares sizes and offsets with the values a C compiler computes from this
 * very file (exporter/build.rs compiles exporter/abi_layout.c against it).
 *
 * Rules for changing this file: only append fields at the end of a struct,
 * keep every field naturally aligned with explicit padding (no implicit
 * holes), and bump FLOW_ABI_VERSION.
 *
 * Include <linux/types.h> (or equivalent __u8..__u64 typedefs) before this.
 */
#ifndef FLOWMAP_FLOW_H
#define FLOWMAP_FLOW_H

#define FLOW_ABI_VERSION 3

/* Map sizes (userspace may override max_entries at load time). */
#define FLOW_RINGBUF_BYTES (256 * 1024)
#define FLOW_OPEN_MAX_ENTRIES 65536
#define FLOW_WORKLOAD_MAX_ENTRIES 65536

/* Flow direction, seen from the local socket. */
#define FLOW_DIR_UNKNOWN 0 /* the handshake was not observed */
#define FLOW_DIR_CLIENT 1  /* active open: SYN_SENT -> ESTABLISHED */
#define FLOW_DIR_SERVER 2  /* passive open: SYN_RECV -> ESTABLISHED */

/* flow_event.flags */
/* The connection closed before reaching ESTABLISHED (refused, timed out, aborted). */
#define FLOW_F_NEVER_ESTABLISHED (1u << 0)
/* No open record existed at close: the socket predates the program, or the open
 * map was full. opened_ns/established_ns are 0 and direction may be unknown. */
#define FLOW_F_NO_OPEN_RECORD (1u << 1)
/* workload_id came from the (local address, local port) map. */
#define FLOW_F_WORKLOAD_BY_PORT (1u << 2)
/* workload_id came from the per-address map. */
#define FLOW_F_WORKLOAD_BY_ADDR (1u << 3)
/* The peer's FIN was received (it is excluded from bytes_received). */
#define FLOW_F_FIN_RECEIVED (1u << 4)
/* The record describes a connection that is still open (open map snapshot). */
#define FLOW_F_OPEN (1u << 5)
/* The last refresh could not confirm the socket behind the record; the
 * counters are those of the previous refresh. */
#define FLOW_F_STALE (1u << 6)
/* The probe did not see the handshake: the record was seeded from a socket
 * that already existed (flow_seed), or its handshake completed while no probe
 * was attached. opened_ns/established_ns are when the probe first saw it
 * established, not when it was established. */
#define FLOW_F_SEEDED (1u << 7)

/* Indices of the per-CPU counter array FLOW_COUNTERS_MAP. */
#define FLOW_CTR_RINGBUF_DROPS 0 /* bpf_ringbuf_reserve failed: a close event was lost */
#define FLOW_CTR_OPEN_MAP_FULL 1 /* an open record could not be inserted */
#define FLOW_CTR_REFRESH_STALE 2 /* refresh found (and deleted) a record whose socket is gone */
#define FLOW_CTR_SEEDED 3        /* flow_seed inserted an open record for an existing socket */
#define FLOW_CTR_COUNT 4

/*
 * One TCP connection as seen by one local socket.
 *
 * Times are CLOCK_TAI nanoseconds from bpf_ktime_get_tai_ns(); userspace
 * converts them to UNIX wall-clock time (subtracting the current TAI-UTC
 * offset). A time of 0 means "not observed".
 *
 * Addresses are 16 bytes in network order; IPv4 (including IPv4-mapped
 * addresses on AF_INET6 sockets) is stored as ::ffff:a.b.c.d and `family` is
 * then AF_INET (2). Ports are in host byte order.
 */
struct flow_event {
	__u64 cookie;          /* socket cookie: unique per socket until reboot */
	__u64 opened_ns;       /* TAI ns: first state of the handshake (SYN_SENT / SYN_RECV) */
	__u64 established_ns;  /* TAI ns: reached ESTABLISHED; 0 if never */
	__u64 closed_ns;       /* TAI ns: reached CLOSE; 0 while open */
	__u64 cgroup_id;       /* cgroup v2 id of the socket (sk->sk_cgrp_data) */
	__u64 bytes_sent;      /* payload bytes sent, retransmissions excluded */
	__u64 bytes_received;  /* payload bytes received (FIN excluded) */
	__u64 bytes_retrans;   /* payload bytes retransmitted */
	__u32 segs_out;        /* segments sent, including pure ACKs and retransmits */
	__u32 segs_in;         /* segments received */
	__u32 total_retrans;   /* retransmitted segments */
	__u32 srtt_us;         /* smoothed RTT in microseconds */
	__u32 workload_id;     /* local workload from the assignment maps; 0 = none */
	__u32 netns_ino;       /* inode number of the socket's network namespace */
	__u32 flags;           /* FLOW_F_* */
	__s32 sk_err;          /* sk->sk_err at close (e.g. ECONNREFUSED, ETIMEDOUT) */
	__u16 family;          /* AF_INET (2) or AF_INET6 (10), after v4-mapped folding */
	__u16 local_port;
	__u16 remote_port;
	__u8 direction;        /* FLOW_DIR_* */
	__u8 state;            /* TCP state before the event (close) / at refresh */
	__u8 local_addr[16];
	__u8 remote_addr[16];
};

/* Value of the open-connection map (key: __u64 socket cookie). */
struct flow_open {
	struct flow_event ev;
	__u64 sk; /* kernel address of the socket, used only by the refresh program */
};

/* Key of the per-address workload map; value: __u32 workload id. */
struct workload_addr_key {
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};

/* Key of the per-(address, port) workload map; value: __u32 workload id. */
struct workload_port_key {
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
	__u16 port;    /* local port, host byte order */
	__u16 _pad;    /* must be zero */
};

/* flow_sock.kind */
#define FLOW_SOCK_LISTENER 1 /* a listening socket */
#define FLOW_SOCK_SEEDED 2   /* a connection flow_seed inserted into the open map */

/* flow_sock.flags */
#define FLOW_SOCK_F_V6ONLY 1 /* an IPv6 socket with IPV6_V6ONLY: it serves no IPv4 */

/*
 * One socket listed by the flow_seed iterator, read by userspace from the
 * iterator's file: every listening socket, and every connection the pass
 * inserted into the open map (so userspace can set its direction). Same
 * address conventions as struct flow_event.
 */
struct flow_sock {
	__u64 cookie;
	__u64 cgroup_id;
	__u32 netns_ino;
	__u16 family;
	__u16 local_port;
	__u16 remote_port;
	__u8 kind;  /* FLOW_SOCK_* */
	__u8 state; /* TCP state */
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u8 flags;   /* FLOW_SOCK_F_* (ABI 3; was padding) */
	__u8 _pad[3]; /* zero */
	/*
	 * cgroup v2 id of the task holding the socket (ABI 3). A socket is charged to
	 * the cgroup of whoever created it, and an accepted one to its listener's; the
	 * task that serves it may be elsewhere (socket activation, a fork whose child
	 * moved, SCM_RIGHTS). One record per holding task.
	 */
	__u64 holder_cgroup_id;
};

/* Names of the objects in flow.bpf.o (map names are limited to 15 chars). */
#define FLOW_EVENTS_MAP "flow_events"
#define FLOW_OPEN_MAP "flow_open"
#define FLOW_WL_ADDR_MAP "flow_wl_addr"
#define FLOW_WL_PORT_MAP "flow_wl_port"
#define FLOW_COUNTERS_MAP "flow_counters"
#define FLOW_STATE_PROG "flow_state"
#define FLOW_REFRESH_PROG "flow_refresh"
#define FLOW_SEED_PROG "flow_seed"

#endif /* FLOWMAP_FLOW_H */
