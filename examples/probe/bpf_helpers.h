/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The few BPF helpers and map macros the example probe needs. Kernel headers
 * packages do not ship libbpf's bpf_helpers.h, so, like Falco's legacy probe,
 * the helpers are declared as pointers to their BPF_FUNC_* numbers.
 */
#ifndef EXAMPLE_PROBE_BPF_HELPERS_H
#define EXAMPLE_PROBE_BPF_HELPERS_H

#include <uapi/linux/bpf.h>

#define __bpf_section(NAME) __attribute__((section(NAME), used))

/* BTF-defined maps (libbpf 1.x refuses the legacy `maps` section by default). */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   unsigned long long flags) = (void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_delete_elem;
static unsigned long long (*bpf_get_current_pid_tgid)(void) = (void *)BPF_FUNC_get_current_pid_tgid;

#endif
