// SPDX-License-Identifier: GPL-2.0-only
/*
 * falco-probes' example probe: counts system calls per process.
 *
 * raw_tracepoint/sys_enter adds one to the calling process's counter in a
 * hash map; raw_tracepoint/sched_process_exit drops the counter of a process
 * whose last thread exits. Like Falco's legacy probe it carries the kernel it
 * was built for (`kernel_version`) and its own version (`probe_version`) in
 * sections of their own, so a loader can check both before loading.
 */
#include <generated/utsrelease.h>
#include <linux/types.h>

#include "bpf_helpers.h"

#define EXAMPLE_PROBE_VERSION "1.0.0"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} syscalls_per_tgid __bpf_section(".maps");

__bpf_section("raw_tracepoint/sys_enter")
int count_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1;
	__u64 *count;

	count = bpf_map_lookup_elem(&syscalls_per_tgid, &tgid);
#ifdef EXAMPLE_PROBE_REFUSED
	/* Deliberately wrong: the lookup may return NULL and the verifier must refuse this. */
	__sync_fetch_and_add(count, 1);
#else
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	bpf_map_update_elem(&syscalls_per_tgid, &tgid, &one, BPF_NOEXIST);
#endif
	return 0;
}

__bpf_section("raw_tracepoint/sched_process_exit")
int forget_exited_process(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	/* Threads exit too; only the group leader's exit ends the process. */
	if ((__u32)pid_tgid == tgid)
		bpf_map_delete_elem(&syscalls_per_tgid, &tgid);
	return 0;
}

char kernel_ver[] __bpf_section("kernel_version") = UTS_RELEASE;

char probe_ver[] __bpf_section("probe_version") = EXAMPLE_PROBE_VERSION;

char __license[] __bpf_section("license") = "GPL";
