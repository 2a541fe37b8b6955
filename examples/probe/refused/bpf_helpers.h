/* SPDX-License-Identifier: GPL-2.0-only */
#include "../bpf_helpers.h"
