// SPDX-License-Identifier: Apache-2.0
/*
 * legacy-bpf-loader: load every program of a legacy eBPF probe (Falco's
 * driver/bpf up to 9.1.0+driver) into the running kernel, the way Falco's
 * libscap does, without attaching anything, and say what the kernel thought.
 *
 *   legacy-bpf-loader [--log-lines N] [--full-logs K] PROBE.o
 *
 * A legacy probe defines its maps as `struct bpf_map_def` values in a section
 * named `maps` and refers to them from `ld_imm64` instructions through
 * relocations; libbpf 1.x no longer reads that format. This program:
 *
 *   1. reads the ELF object (64-bit little-endian, machine BPF, relocatable)
 *      and checks every offset it uses;
 *   2. takes each symbol of the `maps` section (in address order) as one map
 *      definition (type, key_size, value_size, max_entries, map_flags, ...),
 *      the definition's size being the section's size over the number of
 *      maps, and creates each map with bpf(BPF_MAP_CREATE); max_entries 0
 *      means one entry per configured CPU (libscap does so for its per-CPU
 *      maps);
 *   3. patches every relocated `ld_imm64` of a program section to carry the
 *      map's file descriptor (src_reg BPF_PSEUDO_MAP_FD);
 *   4. loads every program section with bpf(BPF_PROG_LOAD), its type from the
 *      section name's prefix (raw_tracepoint/ -> RAW_TRACEPOINT, tracepoint/
 *      -> TRACEPOINT, ...), the `license` section's text, a program name from
 *      the section name's last part; a refused program is loaded once more
 *      with the verifier's log (level 1), whose end is printed.
 *
 * Output: one line per map and per program (`prog <section> ok`,
 * `prog <section> refused: <errno>` followed by the end of the verifier's log
 * between `-- BEGIN PROG LOAD LOG` and `-- END PROG LOAD LOG --`), then
 * `summary: ...`. Exit code: 0 every program loaded; 1 the kernel refused a
 * program or a map; 2 the object is malformed or not supported (an ELF or
 * relocation problem, or another error in user space): no verdict of the
 * kernel.
 *
 * Only libc and the kernel's UAPI headers; built statically so that a guest
 * with nothing but busybox can run it.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#define EXIT_LOADED 0
#define EXIT_REFUSED 1
#define EXIT_MALFORMED 2

/* The verifier's log buffers tried for a refused program: 16 MiB (libscap's size), then larger while the kernel says ENOSPC. */
static const size_t LOG_SIZES[] = {16u << 20, 64u << 20, 256u << 20};
/* Longest line of the verifier's log printed (its state dumps can run long). */
#define MAX_LOG_LINE 300

struct section {
	const Elf64_Shdr *hdr;
	const char *name;
	const unsigned char *data; /* NULL for SHT_NOBITS */
};

struct map {
	const char *name;
	uint64_t offset; /* in the maps section */
	uint32_t type, key_size, value_size, max_entries, map_flags, numa_node;
	int from_cpus; /* max_entries was 0 in the object */
	int fd;
	int err; /* errno of BPF_MAP_CREATE, 0 when created */
};

struct program {
	size_t shndx;
	const char *section;
	enum bpf_prog_type type;
	struct bpf_insn *insns;
	size_t insn_cnt;
	const struct map *missing_map; /* a map it uses could not be created */
	size_t *reloc_insn, *reloc_map; /* relocated ld_imm64 instructions and their maps */
	size_t nrelocs;
};

static const char *probe_path;
static int malformed_count;

static void malformed(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("error: %s: ", probe_path);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	malformed_count++;
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static const char *errno_name(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	case ELOOP: return "ELOOP";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case 524: return "ENOTSUPP";
	default: return "E?";
	}
}

/* ---- The ELF object ------------------------------------------------------ */

static unsigned char *file_data;
static size_t file_size;
static const Elf64_Ehdr *ehdr;
static struct section *sections;
static size_t shnum;

static int read_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t got = 0;

	if (fd < 0) {
		printf("error: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		printf("error: %s: %s\n", path, st.st_size == 0 ? "empty file" : strerror(errno));
		close(fd);
		return -1;
	}
	file_size = (size_t)st.st_size;
	file_data = malloc(file_size);
	if (!file_data) {
		printf("error: out of memory reading %s\n", path);
		close(fd);
		return -1;
	}
	while (got < file_size) {
		ssize_t n = read(fd, file_data + got, file_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			printf("error: cannot read %s: %s\n", path, n < 0 ? strerror(errno) : "short read");
			close(fd);
			return -1;
		}
		got += (size_t)n;
	}
	close(fd);
	return 0;
}

/* Whether [off, off+len) lies within the file. */
static int in_file(uint64_t off, uint64_t len)
{
	return off <= file_size && len <= file_size - off;
}

/* A NUL-terminated string at `off` of a string table section, or NULL. */
static const char *string_at(const struct section *strtab, uint64_t off)
{
	const char *s;

	if (!strtab->data || off >= strtab->hdr->sh_size)
		return NULL;
	s = (const char *)strtab->data + off;
	if (!memchr(s, 0, strtab->hdr->sh_size - off))
		return NULL;
	return s;
}

static int read_sections(void)
{
	const Elf64_Shdr *shdrs;
	uint64_t shstrndx;
	size_t i;

	if (file_size < sizeof(Elf64_Ehdr) || memcmp(file_data, ELFMAG, SELFMAG) != 0) {
		malformed("not an ELF file");
		return -1;
	}
	ehdr = (const Elf64_Ehdr *)file_data;
	if (ehdr->e_ident[EI_CLASS] != ELFCLASS64 || ehdr->e_ident[EI_DATA] != ELFDATA2LSB) {
		malformed("not a 64-bit little-endian ELF file");
		return -1;
	}
	if (ehdr->e_machine != EM_BPF || ehdr->e_type != ET_REL) {
		malformed("not a relocatable BPF object (ELF type %u, machine %u; BPF is %u)", ehdr->e_type, ehdr->e_machine, EM_BPF);
		return -1;
	}
	if (ehdr->e_shentsize != sizeof(Elf64_Shdr) || ehdr->e_shoff == 0 || !in_file(ehdr->e_shoff, sizeof(Elf64_Shdr))) {
		malformed("no section header table");
		return -1;
	}
	/* Section headers must be 8-aligned to be read in place; the buffer comes from malloc. */
	if (ehdr->e_shoff % 8) {
		malformed("section header table at an unaligned offset %lu", (unsigned long)ehdr->e_shoff);
		return -1;
	}
	shdrs = (const Elf64_Shdr *)(file_data + ehdr->e_shoff);
	/* More than SHN_LORESERVE sections: the count is in the first header's sh_size, the string table's index in its sh_link. */
	shnum = ehdr->e_shnum ? ehdr->e_shnum : shdrs[0].sh_size;
	shstrndx = ehdr->e_shstrndx == SHN_XINDEX ? shdrs[0].sh_link : ehdr->e_shstrndx;
	if (shnum == 0 || shnum > file_size / sizeof(Elf64_Shdr) || !in_file(ehdr->e_shoff, shnum * sizeof(Elf64_Shdr))) {
		malformed("section header table does not fit in the file (%lu sections)", (unsigned long)shnum);
		return -1;
	}
	if (shstrndx == SHN_UNDEF || shstrndx >= shnum) {
		malformed("no section name table");
		return -1;
	}
	sections = calloc(shnum, sizeof(*sections));
	if (!sections) {
		malformed("out of memory");
		return -1;
	}
	for (i = 0; i < shnum; i++) {
		sections[i].hdr = &shdrs[i];
		if (shdrs[i].sh_type != SHT_NOBITS && shdrs[i].sh_type != SHT_NULL) {
			if (!in_file(shdrs[i].sh_offset, shdrs[i].sh_size)) {
				malformed("section %lu lies outside the file", (unsigned long)i);
				return -1;
			}
			sections[i].data = file_data + shdrs[i].sh_offset;
		}
	}
	if (shdrs[shstrndx].sh_type != SHT_STRTAB || !sections[shstrndx].data) {
		malformed("the section name table is not a string table");
		return -1;
	}
	for (i = 0; i < shnum; i++) {
		sections[i].name = string_at(&sections[shstrndx], shdrs[i].sh_name);
		if (!sections[i].name) {
			malformed("section %lu has no readable name", (unsigned long)i);
			return -1;
		}
	}
	return 0;
}

/* ---- Program sections ---------------------------------------------------- */

struct prefix {
	const char *prefix;
	enum bpf_prog_type type;
};

/* libscap loads tracepoint/ and raw_tracepoint/ sections; the other prefixes are libbpf's names for the same program types. */
static const struct prefix PREFIXES[] = {
	{"raw_tracepoint/", BPF_PROG_TYPE_RAW_TRACEPOINT},
	{"raw_tp/", BPF_PROG_TYPE_RAW_TRACEPOINT},
	{"tracepoint/", BPF_PROG_TYPE_TRACEPOINT},
	{"tp/", BPF_PROG_TYPE_TRACEPOINT},
	{"kprobe/", BPF_PROG_TYPE_KPROBE},
	{"kretprobe/", BPF_PROG_TYPE_KPROBE},
	{"perf_event", BPF_PROG_TYPE_PERF_EVENT},
	{"socket", BPF_PROG_TYPE_SOCKET_FILTER},
	{"xdp", BPF_PROG_TYPE_XDP},
};

static int program_type(const char *name, enum bpf_prog_type *type)
{
	size_t i;

	for (i = 0; i < sizeof(PREFIXES) / sizeof(PREFIXES[0]); i++) {
		size_t n = strlen(PREFIXES[i].prefix);

		/* A prefix ending in '/' needs something after it (libscap: "event name cannot be empty"). */
		if (strncmp(name, PREFIXES[i].prefix, n) == 0 && (PREFIXES[i].prefix[n - 1] != '/' || name[n] != 0)) {
			*type = PREFIXES[i].type;
			return 1;
		}
	}
	return 0;
}

static int is_code(const struct section *s)
{
	return s->hdr->sh_type == SHT_PROGBITS && (s->hdr->sh_flags & SHF_EXECINSTR) && s->hdr->sh_size > 0;
}

/* ---- Maps ----------------------------------------------------------------- */

static int cmp_maps(const void *a, const void *b)
{
	const struct map *l = a, *r = b;

	return l->offset < r->offset ? -1 : l->offset > r->offset;
}

static uint32_t u32_at(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static int configured_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_CONF);

	return n > 0 ? (int)n : 1;
}

/* ---- Verifier log --------------------------------------------------------- */

static void print_log_tail(const char *section, const char *log, size_t len, int max_lines, const char *note)
{
	size_t total = 0, start, i;
	int seen = 0;

	while (len > 0 && (log[len - 1] == '\n' || log[len - 1] == 0))
		len--;
	for (i = 0; i < len; i++)
		if (log[i] == '\n')
			total++;
	if (len > 0)
		total++;
	/* Back from the end to the start of the max_lines-th last line. */
	start = len;
	while (start > 0) {
		if (log[start - 1] == '\n' && ++seen == max_lines)
			break;
		start--;
	}
	printf("-- BEGIN PROG LOAD LOG %s (last %lu of %lu lines%s) --\n", section,
	       (unsigned long)(total < (size_t)max_lines ? total : (size_t)max_lines), (unsigned long)total, note);
	while (start < len) {
		const char *nl = memchr(log + start, '\n', len - start);
		size_t end = nl ? (size_t)(nl - log) : len;
		size_t n = end - start;

		if (n > MAX_LOG_LINE)
			printf("%.*s ...\n", MAX_LOG_LINE, log + start);
		else
			printf("%.*s\n", (int)n, log + start);
		start = end + 1;
	}
	printf("-- END PROG LOAD LOG --\n");
}

/* ---- Loading ---------------------------------------------------------------- */

static const char *license = "";
static uint32_t kern_version;
/* Program names came with 4.15; older kernels refuse a load that names one (libscap loads again without it). */
static int names_supported = 1;

static void set_prog_name(union bpf_attr *attr, const char *section)
{
	const char *last = strrchr(section, '/');
	size_t n = 0;

	last = last ? last + 1 : section;
	/* The kernel takes letters, digits, '_' and '.' only. */
	for (; *last && n < BPF_OBJ_NAME_LEN - 1; last++)
		if ((*last >= 'a' && *last <= 'z') || (*last >= 'A' && *last <= 'Z') || (*last >= '0' && *last <= '9') || *last == '_' || *last == '.')
			attr->prog_name[n++] = *last;
}

static int load_program(const struct program *p, char *log, size_t log_size)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = p->type;
	attr.insn_cnt = (uint32_t)p->insn_cnt;
	attr.insns = (uint64_t)(uintptr_t)p->insns;
	attr.license = (uint64_t)(uintptr_t)license;
	attr.kern_version = kern_version;
	if (names_supported)
		set_prog_name(&attr, p->section);
	if (log) {
		attr.log_buf = (uint64_t)(uintptr_t)log;
		attr.log_size = (uint32_t)log_size;
		attr.log_level = 1;
		log[0] = 0;
	}
	return (int)sys_bpf(BPF_PROG_LOAD, &attr);
}

static void usage(void)
{
	printf("usage: legacy-bpf-loader [--log-lines N] [--full-logs K] PROBE.o\n");
}

int main(int argc, char **argv)
{
	int log_lines = 60, full_logs = 3;
	const struct section *symtab = NULL, *strtab, *maps_sec = NULL;
	size_t maps_shndx = 0, nsyms, i, j;
	const Elf64_Sym *syms;
	struct map *maps = NULL;
	size_t nmaps = 0, def_size = 0;
	struct program *progs = NULL;
	size_t nprogs = 0;
	const char *kernel_version = NULL;
	struct utsname uts = {0};
	struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
	int maps_refused = 0, loaded = 0, refused = 0, not_tried = 0, logs_printed = 0;
	FILE *jit;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < (size_t)argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--log-lines") == 0 && i + 1 < (size_t)argc) {
			log_lines = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--full-logs") == 0 && i + 1 < (size_t)argc) {
			full_logs = atoi(argv[++i]);
		} else {
			usage();
			return EXIT_MALFORMED;
		}
	}
	if (i + 1 != (size_t)argc || log_lines < 1) {
		usage();
		return EXIT_MALFORMED;
	}
	probe_path = argv[i];
	if (read_file(probe_path) < 0)
		return EXIT_MALFORMED;
	if (read_sections() < 0)
		return EXIT_MALFORMED;

	/* The symbol table, the maps, the license, the kernel it was built for. */
	for (i = 0; i < shnum; i++) {
		const struct section *s = &sections[i];

		if (s->hdr->sh_type == SHT_SYMTAB) {
			if (symtab) {
				malformed("more than one symbol table");
				return EXIT_MALFORMED;
			}
			symtab = s;
		} else if (strcmp(s->name, "maps") == 0) {
			maps_sec = s;
			maps_shndx = i;
		} else if (strcmp(s->name, "license") == 0 && s->data) {
			if (!memchr(s->data, 0, s->hdr->sh_size)) {
				malformed("the license section is not a NUL-terminated string");
				return EXIT_MALFORMED;
			}
			license = (const char *)s->data;
		} else if (strcmp(s->name, "kernel_version") == 0 && s->data && memchr(s->data, 0, s->hdr->sh_size)) {
			kernel_version = (const char *)s->data;
		}
	}
	if (!symtab) {
		malformed("no symbol table (SHT_SYMTAB); a stripped object has lost its map relocations");
		return EXIT_MALFORMED;
	}
	if (symtab->hdr->sh_entsize != sizeof(Elf64_Sym) || symtab->hdr->sh_size % sizeof(Elf64_Sym) || symtab->hdr->sh_offset % 8 ||
	    symtab->hdr->sh_link >= shnum || sections[symtab->hdr->sh_link].hdr->sh_type != SHT_STRTAB) {
		malformed("the symbol table is malformed");
		return EXIT_MALFORMED;
	}
	syms = (const Elf64_Sym *)symtab->data;
	nsyms = symtab->hdr->sh_size / sizeof(Elf64_Sym);
	strtab = &sections[symtab->hdr->sh_link];

	if (uname(&uts) == 0) {
		unsigned a = 0, b = 0, c = 0;

		sscanf(uts.release, "%u.%u.%u", &a, &b, &c);
		kern_version = (a << 16) + (b << 8) + (c > 255 ? 255 : c);
		names_supported = kern_version >= ((4u << 16) + (15u << 8));
	}
	printf("probe %s: %lu bytes, %lu sections; license \"%s\"; kernel_version \"%s\" (running %s)\n", probe_path,
	       (unsigned long)file_size, (unsigned long)shnum, license, kernel_version ? kernel_version : "(none)", uts.release);
	if (kernel_version && strcmp(kernel_version, uts.release) != 0)
		printf("note: the probe was built for %s, this kernel is %s: libscap refuses to load such a probe\n", kernel_version, uts.release);

	/* Map definitions: every symbol in the maps section, by address. */
	if (maps_sec) {
		if (!maps_sec->data) {
			malformed("the maps section holds no data");
			return EXIT_MALFORMED;
		}
		maps = calloc(nsyms ? nsyms : 1, sizeof(*maps));
		if (!maps) {
			malformed("out of memory");
			return EXIT_MALFORMED;
		}
		for (i = 0; i < nsyms; i++) {
			if (syms[i].st_shndx != maps_shndx || ELF64_ST_TYPE(syms[i].st_info) == STT_SECTION)
				continue;
			maps[nmaps].name = string_at(strtab, syms[i].st_name);
			if (!maps[nmaps].name || !maps[nmaps].name[0]) {
				malformed("map symbol %lu has no name", (unsigned long)i);
				return EXIT_MALFORMED;
			}
			maps[nmaps].offset = syms[i].st_value;
			maps[nmaps].fd = -1;
			nmaps++;
		}
		if (nmaps == 0) {
			malformed("the maps section has no map symbols");
			return EXIT_MALFORMED;
		}
		qsort(maps, nmaps, sizeof(*maps), cmp_maps);
		if (maps_sec->hdr->sh_size % nmaps) {
			malformed("the maps section's %lu bytes do not divide among its %lu maps", (unsigned long)maps_sec->hdr->sh_size, (unsigned long)nmaps);
			return EXIT_MALFORMED;
		}
		def_size = maps_sec->hdr->sh_size / nmaps;
		if (def_size < 16 || def_size % 4) {
			malformed("map definitions of %lu bytes: a struct bpf_map_def has at least type, key_size, value_size, max_entries", (unsigned long)def_size);
			return EXIT_MALFORMED;
		}
		for (i = 0; i < nmaps; i++) {
			const unsigned char *d;
			struct map *m = &maps[i];

			if (m->offset % def_size || m->offset + def_size > maps_sec->hdr->sh_size || (i > 0 && m->offset == maps[i - 1].offset)) {
				malformed("map %s at offset %lu does not fit the maps section's %lu-byte definitions", m->name, (unsigned long)m->offset, (unsigned long)def_size);
				return EXIT_MALFORMED;
			}
			d = maps_sec->data + m->offset;
			m->type = u32_at(d);
			m->key_size = u32_at(d + 4);
			m->value_size = u32_at(d + 8);
			m->max_entries = u32_at(d + 12);
			m->map_flags = def_size >= 20 ? u32_at(d + 16) : 0;
			/* inner_map_idx (d + 20) is not used: map-in-map types need an inner map, which neither this loader nor libscap makes. */
			m->numa_node = def_size >= 28 ? u32_at(d + 24) : 0;
			if (m->type == BPF_MAP_TYPE_ARRAY_OF_MAPS || m->type == BPF_MAP_TYPE_HASH_OF_MAPS) {
				malformed("map %s: maps of maps are not supported", m->name);
				return EXIT_MALFORMED;
			}
		}
	}

	/* Program sections, copied so that their relocations can be applied. */
	progs = calloc(shnum, sizeof(*progs));
	if (!progs) {
		malformed("out of memory");
		return EXIT_MALFORMED;
	}
	for (i = 0; i < shnum; i++) {
		const struct section *s = &sections[i];
		enum bpf_prog_type type;
		struct program *p;

		if (!is_code(s))
			continue;
		if (!program_type(s->name, &type)) {
			printf("note: code section %s is not a program section this loader knows (%lu bytes): not loaded\n", s->name, (unsigned long)s->hdr->sh_size);
			continue;
		}
		if (s->hdr->sh_size % sizeof(struct bpf_insn)) {
			malformed("program section %s is %lu bytes, not a whole number of instructions", s->name, (unsigned long)s->hdr->sh_size);
			continue;
		}
		p = &progs[nprogs++];
		p->shndx = i;
		p->section = s->name;
		p->type = type;
		p->insn_cnt = s->hdr->sh_size / sizeof(struct bpf_insn);
		p->insns = malloc(s->hdr->sh_size);
		if (!p->insns) {
			malformed("out of memory");
			return EXIT_MALFORMED;
		}
		memcpy(p->insns, s->data, s->hdr->sh_size);
	}
	for (i = 0; i < shnum; i++) {
		const struct section *rel = &sections[i];

		if (rel->hdr->sh_type != SHT_REL)
			continue;
		for (j = 0; j < nprogs; j++) {
			if (progs[j].shndx != rel->hdr->sh_info)
				continue;
			progs[j].reloc_insn = realloc(progs[j].reloc_insn, (progs[j].nrelocs + rel->hdr->sh_size / sizeof(Elf64_Rel) + 1) * sizeof(size_t));
			progs[j].reloc_map = realloc(progs[j].reloc_map, (progs[j].nrelocs + rel->hdr->sh_size / sizeof(Elf64_Rel) + 1) * sizeof(size_t));
			if (!progs[j].reloc_insn || !progs[j].reloc_map) {
				malformed("out of memory");
				return EXIT_MALFORMED;
			}
		}
	}

	/* Relocations of program sections: each must make an ld_imm64 refer to a map. Others (debug info, BTF) are not needed to load. */
	for (i = 0; i < shnum; i++) {
		const struct section *rel = &sections[i];
		struct program *p = NULL;
		size_t nrels;

		if (rel->hdr->sh_type != SHT_REL && rel->hdr->sh_type != SHT_RELA)
			continue;
		for (j = 0; j < nprogs; j++)
			if (progs[j].shndx == rel->hdr->sh_info)
				p = &progs[j];
		if (!p)
			continue;
		if (rel->hdr->sh_type == SHT_RELA) {
			malformed("%s: RELA relocations are not used by BPF objects", rel->name);
			continue;
		}
		if (rel->hdr->sh_entsize != sizeof(Elf64_Rel) || rel->hdr->sh_size % sizeof(Elf64_Rel) || rel->hdr->sh_offset % 8) {
			malformed("%s: malformed relocation section", rel->name);
			continue;
		}
		nrels = rel->hdr->sh_size / sizeof(Elf64_Rel);
		for (j = 0; j < nrels; j++) {
			const Elf64_Rel *r = (const Elf64_Rel *)rel->data + j;
			size_t sym_idx = ELF64_R_SYM(r->r_info);
			size_t insn_idx = r->r_offset / sizeof(struct bpf_insn);
			const Elf64_Sym *sym;
			const char *sym_name;
			struct bpf_insn *insn;
			uint64_t offset;
			size_t m;

			if (r->r_offset % sizeof(struct bpf_insn) || insn_idx + 1 >= p->insn_cnt) {
				malformed("%s: relocation %lu at offset %lu is not at an ld_imm64 instruction of %s", rel->name, (unsigned long)j, (unsigned long)r->r_offset, p->section);
				continue;
			}
			if (sym_idx == 0 || sym_idx >= nsyms) {
				malformed("%s: relocation %lu names symbol %lu, which does not exist", rel->name, (unsigned long)j, (unsigned long)sym_idx);
				continue;
			}
			sym = &syms[sym_idx];
			sym_name = string_at(strtab, sym->st_name);
			if (!sym_name || !sym_name[0])
				sym_name = sym->st_shndx < shnum ? sections[sym->st_shndx].name : "?";
			insn = &p->insns[insn_idx];
			if (insn->code != (BPF_LD | BPF_IMM | BPF_DW) || ELF64_R_TYPE(r->r_info) != R_BPF_64_64) {
				malformed("%s: instruction %lu (code 0x%02x, relocation type %lu, symbol %s) is not a 64-bit load of a map: calls to other functions and global data are not supported (libscap supports neither)",
				          p->section, (unsigned long)insn_idx, insn->code, (unsigned long)ELF64_R_TYPE(r->r_info), sym_name);
				continue;
			}
			if (!maps_sec || sym->st_shndx != maps_shndx) {
				malformed("%s: instruction %lu refers to %s, which is not in the maps section (global data is not supported, as in libscap)", p->section, (unsigned long)insn_idx, sym_name);
				continue;
			}
			/* A section symbol carries the map's offset in the instruction (SHT_REL: the addend is in place). */
			offset = sym->st_value + (ELF64_ST_TYPE(sym->st_info) == STT_SECTION ? (uint64_t)(uint32_t)insn->imm : 0);
			for (m = 0; m < nmaps && maps[m].offset != offset; m++)
				;
			if (m == nmaps) {
				malformed("%s: instruction %lu refers to offset %lu of the maps section, where no map begins", p->section, (unsigned long)insn_idx, (unsigned long)offset);
				continue;
			}
			insn->src_reg = BPF_PSEUDO_MAP_FD;
			/* The map's file descriptor goes in once the maps exist. */
			p->reloc_insn[p->nrelocs] = insn_idx;
			p->reloc_map[p->nrelocs] = m;
			p->nrelocs++;
		}
	}
	if (malformed_count) {
		printf("summary: malformed object (%d error%s): nothing loaded\n", malformed_count, malformed_count == 1 ? "" : "s");
		return EXIT_MALFORMED;
	}

	/* From here on, what the kernel says. */
	if (setrlimit(RLIMIT_MEMLOCK, &unlimited) < 0)
		printf("note: setrlimit(RLIMIT_MEMLOCK): %s (kernels before 5.11 charge maps and programs to it)\n", strerror(errno));
	/* libscap turns the JIT on; kernels built with BPF_JIT_ALWAYS_ON have it on already. */
	jit = fopen("/proc/sys/net/core/bpf_jit_enable", "w");
	if (jit) {
		fputs("1", jit);
		fclose(jit);
	}

	for (i = 0; i < nmaps; i++) {
		struct map *m = &maps[i];
		union bpf_attr attr;

		if (m->max_entries == 0) {
			m->max_entries = (uint32_t)configured_cpus();
			m->from_cpus = 1;
		}
		memset(&attr, 0, sizeof(attr));
		attr.map_type = m->type;
		attr.key_size = m->key_size;
		attr.value_size = m->value_size;
		attr.max_entries = m->max_entries;
		attr.map_flags = m->map_flags;
		if (m->map_flags & BPF_F_NUMA_NODE)
			attr.numa_node = m->numa_node;
		m->fd = (int)sys_bpf(BPF_MAP_CREATE, &attr);
		if (m->fd < 0) {
			m->err = errno;
			maps_refused++;
			printf("map %s refused: type %u key %u value %u entries %u flags 0x%x: %s (%s)\n", m->name, m->type, m->key_size, m->value_size,
			       m->max_entries, m->map_flags, strerror(m->err), errno_name(m->err));
		} else {
			printf("map %s ok: type %u key %u value %u entries %u%s flags 0x%x\n", m->name, m->type, m->key_size, m->value_size, m->max_entries,
			       m->from_cpus ? " (0 in the object: one per CPU)" : "", m->map_flags);
		}
	}
	for (i = 0; i < nprogs; i++) {
		struct program *p = &progs[i];

		for (j = 0; j < p->nrelocs; j++) {
			const struct map *m = &maps[p->reloc_map[j]];

			if (m->fd < 0)
				p->missing_map = m;
			p->insns[p->reloc_insn[j]].imm = m->fd;
		}
	}

	for (i = 0; i < nprogs; i++) {
		struct program *p = &progs[i];
		int fd, err;
		size_t k;

		if (p->missing_map) {
			not_tried++;
			printf("prog %s not loaded: it uses map %s, which the kernel refused\n", p->section, p->missing_map->name);
			continue;
		}
		/* First without the verifier's log (as libscap does): a log costs time and can fill its buffer. */
		fd = load_program(p, NULL, 0);
		if (fd >= 0) {
			loaded++;
			printf("prog %s ok (%lu insns)\n", p->section, (unsigned long)p->insn_cnt);
			close(fd);
			continue;
		}
		err = errno;
		refused++;
		printf("prog %s refused (%lu insns): %s (%s)\n", p->section, (unsigned long)p->insn_cnt, strerror(err), errno_name(err));
		/* Once more with the verifier's log, for its reason: the log's end says why. */
		for (k = 0; k < sizeof(LOG_SIZES) / sizeof(LOG_SIZES[0]); k++) {
			char *log = malloc(LOG_SIZES[k]);
			int again, log_err;
			size_t len;
			const char *note = "";

			if (!log) {
				printf("note: no memory for a %lu MiB verifier log\n", (unsigned long)(LOG_SIZES[k] >> 20));
				break;
			}
			again = load_program(p, log, LOG_SIZES[k]);
			log_err = errno;
			if (again >= 0) {
				/* Should not happen: the same program, the same kernel. Say so rather than guess. */
				printf("note: %s loaded when loaded again with the verifier's log\n", p->section);
				close(again);
				free(log);
				break;
			}
			log[LOG_SIZES[k] - 1] = 0;
			len = strlen(log);
			if (log_err == ENOSPC && len + 1 >= LOG_SIZES[k] - 1 && k + 1 < sizeof(LOG_SIZES) / sizeof(LOG_SIZES[0])) {
				free(log);
				continue; /* the log did not fit; before 6.4 the kernel keeps its start, so try a larger buffer */
			}
			if (log_err == ENOSPC && len + 1 >= LOG_SIZES[k] - 1)
				note = "; the log filled its buffer: this kernel keeps its start, so this is not its end";
			if (logs_printed < full_logs)
				print_log_tail(p->section, log, len, log_lines, note);
			else
				print_log_tail(p->section, log, len, 3, note);
			logs_printed++;
			free(log);
			break;
		}
	}

	printf("summary: %lu programs: %d loaded, %d refused, %d not loaded; %lu maps: %d refused\n", (unsigned long)nprogs, loaded, refused, not_tried,
	       (unsigned long)nmaps, maps_refused);
	if (nprogs == 0) {
		printf("error: %s: no program section (raw_tracepoint/, tracepoint/, ...)\n", probe_path);
		return EXIT_MALFORMED;
	}
	return refused || maps_refused || not_tried ? EXIT_REFUSED : EXIT_LOADED;
}
