// SPDX-License-Identifier: GPL-2.0-only
/*
 * A probe that compiles but that the kernel's verifier must refuse: it reads
 * past the end of a map value (the value is 8 bytes; it reads the 8 bytes
 * after them). verify-load's tests boot a real kernel with it and expect the
 * verdict `refused` with the verifier's reason:
 *
 *   invalid access to map value, value_size=8 off=8 size=8
 *
 * It needs no kernel headers (the few definitions it uses are below), so a
 * plain `clang -O2 -g -target bpf -c probe.c` builds it in a second, and the
 * object is the same for every kernel.
 */

typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
/* BTF-defined map attributes, as libbpf's bpf_helpers.h spells them. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_FUNC_map_lookup_elem 1

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("raw_tracepoint/sys_enter")
int read_past_value(void *ctx)
{
	__u32 key = 0;
	volatile __u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (!value)
		return 0;
	/* Deliberately wrong: the value is one __u64; value[1] lies outside it. */
	return (int)value[1];
}

char LICENSE[] SEC("license") = "GPL";
