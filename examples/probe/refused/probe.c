// SPDX-License-Identifier: GPL-2.0-only
/*
 * The example probe with one deliberate bug: it uses a map value without
 * checking it for NULL. It compiles, but the kernel's verifier refuses it,
 * which is what a load check must catch (build it with bpfDir `refused`).
 */
#define EXAMPLE_PROBE_REFUSED 1
#include "../probe.c"
