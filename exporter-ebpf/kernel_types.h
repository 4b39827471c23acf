/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kernel_types.h: the few kernel structs flow.bpf.c reads, written by hand.
 *
 * Why not vmlinux.h: generating it needs bpftool, and the build must work on a
 * machine that only has `clang libbpf-dev`. These are CO-RE definitions: every
 * struct carries preserve_access_index, so clang records each field access as
 * a relocation and the loader (aya) rewrites the offsets against the running
 * kernel's BTF (/sys/kernel/btf/vmlinux). Only the fields used are declared;
 * their order and the struct sizes here do not matter, their names and types do.
 * Anonymous unions in the kernel (e.g. skc_daddr inside sock_common) are found
 * by name through the anonymous members.
 */
#ifndef FLOWMAP_KERNEL_TYPES_H
#define FLOWMAP_KERNEL_TYPES_H

#define PAI __attribute__((preserve_access_index))

typedef struct {
	__s64 counter;
} PAI atomic64_t;

struct in6_addr {
	__u8 s6_addr[16];
} PAI;

struct ns_common {
	unsigned int inum;
} PAI;

struct net {
	struct ns_common ns;
} PAI;

typedef struct {
	struct net *net;
} PAI possible_net_t;

/* The anonymous unions mirror the kernel's layout (the CO-RE matcher would
 * also find the fields through a flat definition; this is just closer to
 * include/net/sock.h). */
struct sock_common {
	union {
		__u64 skc_addrpair;
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		__u32 skc_portpair;
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_ipv6only : 1; /* a bitfield: read with BPF_CORE_READ_BITFIELD_PROBED */
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	unsigned long skc_flags;
} PAI;

struct kernfs_node {
	__u64 id;
} PAI;

struct cgroup {
	struct kernfs_node *kn;
} PAI;

struct sock_cgroup_data {
	struct cgroup *cgroup;
} PAI;

struct sock {
	struct sock_common __sk_common;
	int sk_err;
	__u16 sk_protocol;
	struct sock_cgroup_data sk_cgrp_data;
} PAI;

struct inet_sock {
	__be16 inet_sport;
} PAI;

struct tcp_sock {
	__u32 segs_in;
	__u32 segs_out;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 bytes_retrans;
	__u32 srtt_us;
	__u32 total_retrans;
} PAI;

/* The task_file iterator's context (include/linux/bpf.h, kernel/bpf/task_iter.c). */
struct seq_file;
struct file;

/* A task's cgroup v2 (include/linux/sched.h, include/linux/cgroup-defs.h). */
struct css_set {
	struct cgroup *dfl_cgrp;
} PAI;

struct task_struct {
	struct css_set *cgroups;
} PAI;

struct socket {
	struct sock *sk;
} PAI;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} PAI;

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
} PAI;

/* Constants from the kernel headers (stable UAPI / enum values). */
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_CLOSING 11
#define TCP_NEW_SYN_RECV 12

/* enum sock_flags in include/net/sock.h: bit number in sk_flags */
#define SOCK_DONE 1

#undef PAI

#endif /* FLOWMAP_KERNEL_TYPES_H */
