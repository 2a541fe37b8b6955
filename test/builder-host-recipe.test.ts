import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { configureFile } from '../src/builders/cmake-configure.js';
import { checkBpfObject, readElf, sectionContents } from '../src/builders/elf.js';
import { createHostBuilder } from '../src/builders/host.js';
import { findKernelDir, OBJTREE_VIEW, prepareKernelView, resolveInRoot, SRCTREE_VIEW } from '../src/builders/kernel-tree.js';
import { prepareDriverBuild } from '../src/builders/recipe.js';
import { treeHash } from '../src/util/tree-hash.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { debianTarget, exampleDriver, obtainDebianKernels, sharedKernelRoot, type DebianKernel } from './helpers/kernel-headers.js';
import { skipOrFail } from './helpers/require.js';

// The recipes that prepare a driver's build directory, the kernel tree view,
// and the ELF check, on small trees made here; then a falcosecurity/libs-shaped
// driver built for real against Debian headers, configure checks included.
// Falco's own tarball cannot be downloaded on this machine, so the real
// driver/bpf of falcosecurity/libs is not built by these tests.

let scratch: string;
before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'falco-probes-recipe-'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function writeTree(root: string, files: Record<string, string>): Promise<string> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
  }
  return root;
}

function expectError(kind: FalcoProbesError['kind'], pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof FalcoProbesError, `expected a FalcoProbesError, got ${String(e)}`);
    assert.equal(e.kind, kind);
    assert.match(e.format(), pattern);
    return true;
  };
}

// --- A falcosecurity/libs-shaped source: the files the legacy probe's build reads, in their places. ---

const DRIVER_CONFIG_H_IN = `/* CMake writes driver_config.h from this file */
#pragma once

/* taken from driver/API_VERSION */
#define PPM_API_CURRENT_VERSION_MAJOR \${PPM_API_CURRENT_VERSION_MAJOR}
#define PPM_API_CURRENT_VERSION_MINOR \${PPM_API_CURRENT_VERSION_MINOR}
#define PPM_API_CURRENT_VERSION_PATCH \${PPM_API_CURRENT_VERSION_PATCH}

/* taken from driver/SCHEMA_VERSION */
#define PPM_SCHEMA_CURRENT_VERSION_MAJOR \${PPM_SCHEMA_CURRENT_VERSION_MAJOR}
#define PPM_SCHEMA_CURRENT_VERSION_MINOR \${PPM_SCHEMA_CURRENT_VERSION_MINOR}
#define PPM_SCHEMA_CURRENT_VERSION_PATCH \${PPM_SCHEMA_CURRENT_VERSION_PATCH}

#include "ppm_api_version.h"

#define DRIVER_VERSION "\${DRIVER_VERSION}"

#define DRIVER_NAME "@DRIVER_NAME@"

#define DRIVER_DEVICE_NAME "\${DRIVER_DEVICE_NAME}"

#define DRIVER_COMMIT "\${GIT_COMMIT}"

#ifndef KBUILD_MODNAME
#define KBUILD_MODNAME DRIVER_NAME
#endif
`;

const EXPECTED_DRIVER_CONFIG_H = `/* CMake writes driver_config.h from this file */
#pragma once

/* taken from driver/API_VERSION */
#define PPM_API_CURRENT_VERSION_MAJOR 8
#define PPM_API_CURRENT_VERSION_MINOR 0
#define PPM_API_CURRENT_VERSION_PATCH 2

/* taken from driver/SCHEMA_VERSION */
#define PPM_SCHEMA_CURRENT_VERSION_MAJOR 3
#define PPM_SCHEMA_CURRENT_VERSION_MINOR 14
#define PPM_SCHEMA_CURRENT_VERSION_PATCH 1

#include "ppm_api_version.h"

#define DRIVER_VERSION "9.1.0+driver"

#define DRIVER_NAME "falco"

#define DRIVER_DEVICE_NAME "falco"

#define DRIVER_COMMIT "9.1.0+driver"

#ifndef KBUILD_MODNAME
#define KBUILD_MODNAME DRIVER_NAME
#endif
`;

// Like Falco's driver/bpf/configure/Makefile.inc.in: runs build.sh for the module and
// adds -DHAS_<MODULE> when it compiles. `@@NEWLINE@@` becomes `@@` on both sides, as with CMake.
const MAKEFILE_INC_IN = `MODULE_MAKEFILE_DIR := $(shell dirname $(abspath $(lastword $(MAKEFILE_LIST))))

HAS_@CONFIGURE_MODULE@ := $(shell env -i CLANG="$(CLANG)" LLC="$(LLC)" PATH="$(PATH)" KERNELDIR="$(KERNELDIR)" sh $(MODULE_MAKEFILE_DIR)/build.sh ; echo $$?)

ifeq ($(HAS_@CONFIGURE_MODULE@),0)
$(info [configure-bpf] Setting HAS_@CONFIGURE_MODULE@ flag)
KBUILD_CPPFLAGS += -DHAS_@CONFIGURE_MODULE@
else
HAS_@CONFIGURE_MODULE@_OUT1 := $(shell sed 's/$$$$/@@NEWLINE@@/' $(MODULE_MAKEFILE_DIR)/build.log | tr -d '\\n')
$(info [configure-bpf] HAS_@CONFIGURE_MODULE@ not set: $(subst @@NEWLINE@@, ,$(HAS_@CONFIGURE_MODULE@_OUT1)))
endif
`;

const CLANG_BPF_RULE = (object: string) => `$(obj)/${object}.o: $(src)/${object}.c
\t$(CLANG) $(LINUXINCLUDE) \\
\t\t$(KBUILD_CPPFLAGS) \\
\t\t$(KBUILD_EXTRA_CPPFLAGS) \\
\t\t-D__KERNEL__ -D__BPF_TRACING__ \\
\t\t-Wno-gnu-variable-sized-type-not-at-end -Wno-address-of-packed-member \\
\t\t-fno-jump-tables -fno-stack-protector -Wno-tautological-compare -Wno-unknown-attributes \\
\t\t-O2 -g -emit-llvm -c $< -o $(patsubst %.o,%.ll,$@)
\t$(LLC) -march=bpf -filetype=obj -o $@ $(patsubst %.o,%.ll,$@)
`;

const LIBS_FILES: Record<string, string> = {
  'README.md': 'falcosecurity/libs-shaped test source\n',
  'userspace/libscap/scap.h': '/* not part of the probe build */\n',
  'driver/API_VERSION': '8.0.2\n',
  'driver/SCHEMA_VERSION': '3.14.1\n',
  'driver/driver_config.h.in': DRIVER_CONFIG_H_IN,
  'driver/ppm_api_version.h': `#pragma once
#define PPM_VERSION_PACK(major, minor, patch) ((((unsigned long long)(major)) << 42) | (((unsigned long long)(minor)) << 21) | ((unsigned long long)(patch)))
#define PPM_API_CURRENT_VERSION PPM_VERSION_PACK(PPM_API_CURRENT_VERSION_MAJOR, PPM_API_CURRENT_VERSION_MINOR, PPM_API_CURRENT_VERSION_PATCH)
#define PPM_SCHEMA_CURRENT_VERSION PPM_VERSION_PACK(PPM_SCHEMA_CURRENT_VERSION_MAJOR, PPM_SCHEMA_CURRENT_VERSION_MINOR, PPM_SCHEMA_CURRENT_VERSION_PATCH)
`,
  'driver/ppm_events_public.h': '#pragma once\n#define PPM_EVENTS_PUBLIC_SEEN 1\n',
  'driver/main.c': '/* the kernel module: not part of the probe build */\n',
  // As in libs 9.x: kbuild's pass includes the configure results, the rule compiles with $(CLANG).
  'driver/bpf/Makefile': `always-y += probe.o
always = $(always-y)

LLC ?= llc
CLANG ?= clang

ifeq ($(strip $(MAKEFILE_LIST)),Makefile)
KERNELDIR ?= /lib/modules/$(shell uname -r)/build
all:
\t$(MAKE) -C $(KERNELDIR) M=$$PWD
else
KERNELDIR ?= $(CURDIR)
FIRST_MAKEFILE := $(firstword $(MAKEFILE_LIST))
FIRST_MAKEFILE_FILENAME := $(notdir $(FIRST_MAKEFILE))
FIRST_MAKEFILE_DIRNAME := $(shell basename $(dir $(FIRST_MAKEFILE)))
ifeq ($(FIRST_MAKEFILE_DIRNAME)/$(FIRST_MAKEFILE_FILENAME), scripts/Makefile.build)
MODULE_MAKEFILE_DIR := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
MAKEFILE_INC_FILES := $(sort $(shell find $(MODULE_MAKEFILE_DIR)/configure -type f -name Makefile.inc))
$(info [configure-bpf] Including $(MAKEFILE_INC_FILES))
include $(MAKEFILE_INC_FILES)
endif

${CLANG_BPF_RULE('probe')}
endif
`,
  'driver/bpf/probe.c': `#include <generated/utsrelease.h>
#include <uapi/linux/bpf.h>

#include "driver_config.h"     /* the flat layout of libs >= 0.10: a copy beside the probe */
#include "../driver_config.h"  /* older tags: the kept driver/ tree */
#include "ppm_events_public.h"

#define __bpf_section(NAME) __attribute__((section(NAME), used))

__bpf_section("raw_tracepoint/sys_enter") int probe_sys_enter(struct bpf_raw_tracepoint_args *ctx) { return 0; }

char kernel_ver[] __bpf_section("kernel_version") = UTS_RELEASE;
char __license[] __bpf_section("license") = "Dual MIT/GPL";
char probe_ver[] __bpf_section("probe_version") = DRIVER_VERSION;
char probe_commit[] __bpf_section("build_commit") = DRIVER_COMMIT;
unsigned long long probe_api_ver __bpf_section("api_version") = PPM_API_CURRENT_VERSION;
unsigned long long probe_schema_ver __bpf_section("schema_version") = PPM_SCHEMA_CURRENT_VERSION;
#ifdef HAS_TASK_PID_FIELD
char configured_yes[] __bpf_section("configure_yes") = "HAS_TASK_PID_FIELD";
#endif
#ifdef HAS_NO_SUCH_FIELD
char configured_no[] __bpf_section("configure_no") = "HAS_NO_SUCH_FIELD";
#endif
`,
  'driver/bpf/configure/Makefile': `always-y += test.o
always = $(always-y)

LLC ?= llc
CLANG ?= clang

KERNELDIR ?= /lib/modules/$(shell uname -r)/build

all:
\t$(MAKE) -C $(KERNELDIR) M=$$PWD

${CLANG_BPF_RULE('test')}`,
  'driver/bpf/configure/build.sh': `#!/bin/sh
SCRIPT=$(readlink -f "$0")
SCRIPT_DIR=$(dirname "\${SCRIPT}")
make -C "\${SCRIPT_DIR}" > "\${SCRIPT_DIR}/build.log" 2>&1
`,
  'driver/bpf/configure/Makefile.inc.in': MAKEFILE_INC_IN,
  // The flat layout: configure tests include the driver's headers from the probe directory.
  'driver/bpf/configure/TASK_PID_FIELD/test.c': `#include "../../ppm_events_public.h"
#include <linux/sched.h>
int probe(struct task_struct *t) { return t->pid; }
char __license[] __attribute__((section("license"), used)) = "GPL";
`,
  'driver/bpf/configure/NO_SUCH_FIELD/test.c': `#include "../../ppm_events_public.h"
#include <linux/sched.h>
int probe(struct task_struct *t) { return t->no_such_field_in_any_kernel; }
char __license[] __attribute__((section("license"), used)) = "GPL";
`,
};

const FALCO_PIN = { name: 'falco', version: '9.1.0+driver', recipe: 'falco-libs' as const, bpfDir: 'driver/bpf', object: 'probe.o' };

describe('CMake configure_file', () => {
  test('replaces ${VAR} and @VAR@, handles #cmakedefine and #cmakedefine01, and leaves make syntax alone', () => {
    const vars = { A: 'one', B: 'two', ON: 'ON', OFFV: 'OFF' };
    const template = [
      'x ${A} @B@ $(shell echo $$$$) $$(A) ${A',
      '#cmakedefine ON value=@A@',
      '#cmakedefine OFFV value',
      '#cmakedefine01 ON',
      '#cmakedefine01 MISSING',
      'empty:${MISSING}:@MISSING@:@@NEWLINE@@:',
    ].join('\n');
    assert.equal(
      configureFile(template, vars, { file: 't.in' }),
      [
        'x one two $(shell echo $$$$) $$(A) ${A',
        '#define ON value=one',
        '/* #undef OFFV */',
        '#define ON 1',
        '#define MISSING 0',
        'empty:::@@:',
      ].join('\n'),
    );
  });

  test('strict mode names the line and column of a variable the recipe does not know', () => {
    assert.throws(
      () => configureFile('ok ${A}\n#define X "${NOT_DEFINED}"\n', { A: '1' }, { file: 'driver_config.h.in', strict: true }),
      expectError('input', /^driver_config\.h\.in:2:12: the template uses \$\{NOT_DEFINED\}, which the recipe does not define/),
    );
  });
});

describe('recipe: falco-libs', () => {
  test('writes driver_config.h and the configure Makefile.inc files as CMake would, keeping driver/ as it is', async () => {
    const src = await writeTree(join(scratch, 'libs-a'), LIBS_FILES);
    const hashBefore = await treeHash(src);
    const dest = join(scratch, 'libs-a-build');
    const prepared = await prepareDriverBuild(FALCO_PIN, src, dest);
    assert.equal(prepared.moduleDir, join(dest, 'driver', 'bpf'));
    assert.equal(prepared.objectFile, 'probe.o');

    assert.equal(await readFile(join(dest, 'driver', 'driver_config.h'), 'utf8'), EXPECTED_DRIVER_CONFIG_H);
    // CMake's flat directory: every driver header beside the probe, the generated one included.
    for (const h of ['driver_config.h', 'ppm_api_version.h', 'ppm_events_public.h'])
      assert.equal(await readFile(join(dest, 'driver', 'bpf', h), 'utf8'), await readFile(join(dest, 'driver', h), 'utf8'));
    assert.deepEqual((await readdir(join(dest, 'driver'))).sort(), [
      'API_VERSION',
      'SCHEMA_VERSION',
      'bpf',
      'driver_config.h',
      'driver_config.h.in',
      'main.c',
      'ppm_api_version.h',
      'ppm_events_public.h',
    ]);
    await assert.rejects(lstat(join(dest, 'userspace')), { code: 'ENOENT' }, 'only driver/ is copied');

    for (const module of ['NO_SUCH_FIELD', 'TASK_PID_FIELD']) {
      const dir = join(dest, 'driver', 'bpf', 'configure', module);
      assert.deepEqual((await readdir(dir)).sort(), ['Makefile', 'Makefile.inc', 'build.sh', 'test.c']);
      const inc = await readFile(join(dir, 'Makefile.inc'), 'utf8');
      assert.equal(inc, MAKEFILE_INC_IN.replaceAll('@CONFIGURE_MODULE@', module).replaceAll('@@NEWLINE@@', '@@'));
      assert.equal(await readFile(join(dir, 'Makefile'), 'utf8'), LIBS_FILES['driver/bpf/configure/Makefile']);
    }
    assert.equal(await treeHash(src), hashBefore, 'the source tree was changed');
  });

  test('refuses what it cannot prepare, with the file to fix', async () => {
    const noDriver = await writeTree(join(scratch, 'libs-no-driver'), { 'README.md': 'x\n' });
    await assert.rejects(
      prepareDriverBuild(FALCO_PIN, noDriver, join(scratch, 'o1')),
      expectError('build', /libs-no-driver\/driver: driver\/ of falcosecurity\/libs not found/),
    );

    const noApi = { ...LIBS_FILES };
    delete noApi['driver/API_VERSION'];
    const noApiDir = await writeTree(join(scratch, 'libs-no-api'), noApi);
    await assert.rejects(
      prepareDriverBuild(FALCO_PIN, noApiDir, join(scratch, 'o2')),
      expectError('build', /libs-no-api\/driver\/API_VERSION: driver\/API_VERSION not found/),
    );

    const badApiDir = await writeTree(join(scratch, 'libs-bad-api'), { ...LIBS_FILES, 'driver/API_VERSION': 'eight\n' });
    await assert.rejects(
      prepareDriverBuild(FALCO_PIN, badApiDir, join(scratch, 'o3')),
      expectError('input', /API_VERSION:1:1: expected a version like 8\.0\.0/),
    );

    const newVar = { ...LIBS_FILES, 'driver/driver_config.h.in': `${DRIVER_CONFIG_H_IN}#define DRIVER_FLAVOR "\${DRIVER_FLAVOR}"\n` };
    const newVarDir = await writeTree(join(scratch, 'libs-new-var'), newVar);
    const lines = newVar['driver/driver_config.h.in']!.split('\n').length - 1;
    await assert.rejects(
      prepareDriverBuild(FALCO_PIN, newVarDir, join(scratch, 'o4')),
      expectError('input', new RegExp(`libs-new-var/driver/driver_config\\.h\\.in:${lines}:24: the template uses \\$\\{DRIVER_FLAVOR\\}`)),
    );

    const noBpf = { ...LIBS_FILES };
    for (const k of Object.keys(noBpf)) if (k.startsWith('driver/bpf/')) delete noBpf[k];
    const noBpfDir = await writeTree(join(scratch, 'libs-no-bpf'), noBpf);
    await assert.rejects(
      prepareDriverBuild(FALCO_PIN, noBpfDir, join(scratch, 'o5')),
      expectError(
        'config',
        /has no legacy eBPF probe: driver\/bpf is not in its source\nhint: driver\/bpf was dropped after 9\.1\.0\+driver[\s\S]*remove bpf from this driver's kinds/,
      ),
    );

    const src = await writeTree(join(scratch, 'libs-b'), LIBS_FILES);
    await assert.rejects(
      prepareDriverBuild({ ...FALCO_PIN, bpfDir: 'driver/../bpf' }, src, join(scratch, 'o6')),
      expectError('config', /bpfDir "driver\/\.\.\/bpf"/),
    );
    await assert.rejects(
      prepareDriverBuild({ ...FALCO_PIN, bpfDir: '/abs' }, src, join(scratch, 'o7')),
      expectError('config', /bpfDir "\/abs"/),
    );
    await assert.rejects(
      prepareDriverBuild({ ...FALCO_PIN, object: '../probe.o' }, src, join(scratch, 'o8')),
      expectError('config', /object "\.\.\/probe\.o"/),
    );
  });
});

describe('recipe: kbuild', () => {
  test('copies the whole source, so a bpfDir below can include from above, and drops objects built in place', async () => {
    const src = await writeTree(join(scratch, 'kb'), {
      Makefile: 'always-y += probe.o\n',
      'probe.c': 'int x;\n',
      'probe.o': 'stale object from an in-place build\n',
      '.probe.o.cmd': 'stale\n',
      'variant/Makefile': 'include $(src)/../Makefile\n',
      'variant/probe.c': '#include "../probe.c"\n',
      'variant/probe.o': 'stale\n',
    });
    await symlink('probe.c', join(src, 'alias.c'));
    const dest = join(scratch, 'kb-build');
    const prepared = await prepareDriverBuild({ ...exampleDriver(), bpfDir: 'variant' }, src, dest);
    assert.equal(prepared.moduleDir, join(dest, 'variant'));
    assert.deepEqual((await readdir(join(dest, 'variant'))).sort(), ['Makefile', 'probe.c']);
    assert.equal(await readFile(join(dest, 'probe.c'), 'utf8'), 'int x;\n');
    assert.equal(await readlink(join(dest, 'alias.c')), 'probe.c', 'relative links stay relative');
    assert.equal(await readFile(join(src, 'variant', 'probe.o'), 'utf8'), 'stale\n', 'the source keeps its files');

    await assert.rejects(
      prepareDriverBuild({ ...exampleDriver(), bpfDir: 'nowhere' }, src, join(scratch, 'kb-2')),
      expectError('build', /kb\/nowhere: driver directory nowhere not found/),
    );
    const noMakefile = await writeTree(join(scratch, 'kb-nomk'), { 'probe.c': 'int x;\n' });
    await assert.rejects(
      prepareDriverBuild(exampleDriver(), noMakefile, join(scratch, 'kb-3')),
      expectError('build', /no kbuild Makefile in the driver's \./),
    );
  });
});

describe('kernel tree view', () => {
  /** A Debian-shaped root: arch headers including -common by an absolute path, scripts linked into kbuild. */
  async function debianShapedRoot(name: string, opts: { common?: boolean; kbuild?: boolean } = {}): Promise<string> {
    const root = join(scratch, name);
    const files: Record<string, string> = {
      'usr/src/linux-headers-6.1.0-9-amd64/Makefile': 'include /usr/src/linux-headers-6.1.0-9-common/Makefile\n',
      'usr/src/linux-headers-6.1.0-9-amd64/.config': 'CONFIG_BPF=y\n',
      'usr/src/linux-headers-6.1.0-9-amd64/include/generated/utsrelease.h': '#define UTS_RELEASE "6.1.0-9-amd64"\n',
    };
    if (opts.common !== false) {
      files['usr/src/linux-headers-6.1.0-9-common/Makefile'] = 'srctree := $(realpath $(dir $(lastword $(MAKEFILE_LIST))))\n';
      files['usr/src/linux-headers-6.1.0-9-common/include/linux/bpf.h'] = '/* */\n';
    }
    if (opts.kbuild !== false) files['usr/lib/linux-kbuild-6.1/scripts/Makefile.build'] = '# kbuild\n';
    await writeTree(root, files);
    await symlink('../../lib/linux-kbuild-6.1/scripts', join(root, 'usr/src/linux-headers-6.1.0-9-amd64/scripts'));
    if (opts.common !== false)
      await symlink('../../lib/linux-kbuild-6.1/scripts', join(root, 'usr/src/linux-headers-6.1.0-9-common/scripts'));
    await mkdir(join(root, 'lib/modules/6.1.0-9-amd64'), { recursive: true });
    await symlink('/usr/src/linux-headers-6.1.0-9-amd64', join(root, 'lib/modules/6.1.0-9-amd64/build'));
    await symlink('/usr/src/linux-headers-6.1.0-9-common', join(root, 'lib/modules/6.1.0-9-amd64/source'));
    return root;
  }

  test('Debian: the Makefile include and the kbuild links resolve inside the kernel root, through a view in the work directory', async () => {
    const root = await debianShapedRoot('deb-root');
    const work = join(scratch, 'deb-work');
    await mkdir(work);
    const view = await prepareKernelView({ kernelRoot: root, release: '6.1.0-9-amd64', workDir: work });
    assert.equal(view.layout, 'debian');
    assert.equal(view.kernelDir, join(work, OBJTREE_VIEW));
    assert.equal(view.srcTreeDir, join(work, SRCTREE_VIEW));
    assert.equal(await readFile(join(view.kernelDir, 'Makefile'), 'utf8'), `include ${join(work, SRCTREE_VIEW)}/Makefile\n`);
    assert.equal(await readlink(join(view.kernelDir, 'scripts')), join(root, 'usr/lib/linux-kbuild-6.1/scripts'));
    assert.equal(await readlink(join(view.kernelDir, '.config')), join(root, 'usr/src/linux-headers-6.1.0-9-amd64/.config'));
    assert.equal(
      await readFile(join(view.srcTreeDir!, 'Makefile'), 'utf8'),
      await readFile(join(root, 'usr/src/linux-headers-6.1.0-9-common/Makefile'), 'utf8'),
    );
    assert.ok((await lstat(join(view.srcTreeDir!, 'Makefile'))).isFile(), "a copy: make takes srctree from the Makefile's own directory");
    assert.equal(await readlink(join(view.srcTreeDir!, 'scripts')), join(root, 'usr/lib/linux-kbuild-6.1/scripts'));
    assert.deepEqual(view.prefixMaps, [
      { from: join(work, OBJTREE_VIEW), to: '/usr/src/linux-headers-6.1.0-9-amd64' },
      { from: join(work, SRCTREE_VIEW), to: '/usr/src/linux-headers-6.1.0-9-common' },
      { from: root, to: '' },
    ]);
    // The absolute link resolves inside the root, never on the host.
    assert.equal(
      await resolveInRoot(root, '/lib/modules/6.1.0-9-amd64/build/scripts/Makefile.build'),
      join(root, 'usr/lib/linux-kbuild-6.1/scripts/Makefile.build'),
    );
    assert.equal(await resolveInRoot(root, '/../../../etc/passwd'), undefined);
  });

  test('a missing -common or kbuild package, or missing headers, is a clear error', async () => {
    const noCommon = await debianShapedRoot('deb-no-common', { common: false });
    await mkdir(join(scratch, 'w1'));
    await assert.rejects(
      prepareKernelView({ kernelRoot: noCommon, release: '6.1.0-9-amd64', workDir: join(scratch, 'w1') }),
      expectError(
        'build',
        /deb-no-common\/usr\/src\/linux-headers-6\.1\.0-9-amd64\/Makefile:1:9: the kernel Makefile refers to \/usr\/src\/linux-headers-6\.1\.0-9-common, which none of the kernel's packages provides\nhint: .*-common package/,
      ),
    );
    const noKbuild = await debianShapedRoot('deb-no-kbuild', { kbuild: false });
    await mkdir(join(scratch, 'w2'));
    await assert.rejects(
      prepareKernelView({ kernelRoot: noKbuild, release: '6.1.0-9-amd64', workDir: join(scratch, 'w2') }),
      expectError(
        'build',
        /\/usr\/src\/linux-headers-6\.1\.0-9-(amd64|common)\/scripts -> \.\.\/\.\.\/lib\/linux-kbuild-6\.1\/scripts points at nothing.*\nhint: the kbuild package/,
      ),
    );
    await assert.rejects(
      findKernelDir(noKbuild, '6.1.0-10-amd64'),
      expectError(
        'build',
        /no kernel headers for 6\.1\.0-10-amd64: .*the kernel's packages hold usr\/src\/linux-headers-6\.1\.0-9-amd64, usr\/src\/linux-headers-6\.1\.0-9-common, lib\/modules\/6\.1\.0-9-amd64\n/,
      ),
    );
    await assert.rejects(findKernelDir(noKbuild, '../../etc'), expectError('input', /refusing kernel release/));
  });

  test('older Debian: a Makefile that runs make -C /usr/src/...-common O=$(CURDIR) is pointed at the view too', async () => {
    const root = await writeTree(join(scratch, 'deb10-root'), {
      'usr/src/linux-headers-4.19.0-9-amd64/Makefile': [
        'MAKEFLAGS += --no-print-directory',
        'all:',
        '\t@$(MAKE) -C /usr/src/linux-headers-4.19.0-9-common KBUILD_SRC= O=$(CURDIR) $(cmd)',
        '',
      ].join('\n'),
      'usr/src/linux-headers-4.19.0-9-common/Makefile': 'VERSION = 4\n',
    });
    await mkdir(join(scratch, 'w-deb10'));
    const view = await prepareKernelView({ kernelRoot: root, release: '4.19.0-9-amd64', workDir: join(scratch, 'w-deb10') });
    assert.equal(
      await readFile(join(view.kernelDir, 'Makefile'), 'utf8'),
      ['MAKEFLAGS += --no-print-directory', 'all:', `\t@$(MAKE) -C ${view.srcTreeDir} KBUILD_SRC= O=$(CURDIR) $(cmd)`, ''].join('\n'),
    );
    assert.equal(await readFile(join(view.srcTreeDir!, 'Makefile'), 'utf8'), 'VERSION = 4\n');
  });

  test('RPM: usr/src/kernels/<release> is its own source tree; lib/modules/<release>/build is the last resort', async () => {
    const root = await writeTree(join(scratch, 'rpm-root'), {
      'usr/src/kernels/4.14.355-275.570.amzn2.x86_64/Makefile': 'VERSION = 4\n',
      'usr/src/kernels/4.14.355-275.570.amzn2.x86_64/scripts/Makefile.build': '# kbuild\n',
    });
    await mkdir(join(scratch, 'w3'));
    const view = await prepareKernelView({ kernelRoot: root, release: '4.14.355-275.570.amzn2.x86_64', workDir: join(scratch, 'w3') });
    assert.equal(view.layout, 'rpm');
    assert.equal(view.srcTreeDir, undefined);
    assert.equal(await readFile(join(view.kernelDir, 'Makefile'), 'utf8'), 'VERSION = 4\n');
    assert.equal((await lstat(join(view.kernelDir, 'Makefile'))).isFile(), true, 'the Makefile is a copy, so srctree is the view');
    assert.deepEqual(view.prefixMaps[0], { from: view.kernelDir, to: '/usr/src/kernels/4.14.355-275.570.amzn2.x86_64' });

    const custom = await writeTree(join(scratch, 'custom-root'), { 'opt/headers/Makefile': 'VERSION = 5\n' });
    await mkdir(join(custom, 'lib/modules/5.4.0-x'), { recursive: true });
    await symlink('/opt/headers', join(custom, 'lib/modules/5.4.0-x/build'));
    assert.deepEqual(await findKernelDir(custom, '5.4.0-x'), { dir: join(custom, 'opt/headers'), layout: 'modules-build' });
  });

  test('paths make cannot take literally are refused', async () => {
    const root = await debianShapedRoot('deb-root-2');
    const spaced = join(scratch, 'work with space');
    await mkdir(spaced);
    await assert.rejects(
      prepareKernelView({ kernelRoot: root, release: '6.1.0-9-amd64', workDir: spaced }),
      expectError('usage', /cannot be passed to make/),
    );
  });
});

describe('ELF check', () => {
  test('refuses what is not an ELF relocatable for the BPF machine', async () => {
    assert.throws(
      () => checkBpfObject(Buffer.from('not an object at all'), 'x.o'),
      expectError('build', /^x\.o: the build's output is not an ELF file: no ELF magic/),
    );
    const node = await readFile(process.execPath);
    assert.throws(
      () => checkBpfObject(node, 'node'),
      expectError('build', /^node: the build's output is ELF type [23], not a relocatable object/),
    );
    const truncated = Buffer.from(node.subarray(0, 40));
    assert.throws(() => readElf(truncated, 'cut.o'), expectError('input', /^cut\.o: not a valid ELF file: ELF header/));
  });
});

// --- The libs-shaped source built for real: configure checks, driver_config.h, reproducibility. ---

describe('falco-libs recipe on real Debian headers', () => {
  let skip: string | undefined;
  let kernel: DebianKernel;
  let root: string;
  before(async () => {
    const r = await obtainDebianKernels();
    if (!r.ok) {
      skip = r.skip;
      return;
    }
    kernel = r.kernels[0] as DebianKernel;
    root = await sharedKernelRoot(kernel);
  });

  test('builds the libs-shaped probe with its configure checks, the same bytes from two directories', async (t) => {
    if (skip) return skipOrFail(t, skip);
    const builder = createHostBuilder();
    const pin = await builder.pin();
    const target = debianTarget(kernel, pin, { ...exampleDriver(), ...FALCO_PIN, source: { url: 'https://example.invalid/libs.tar.gz' } });
    const results = [];
    for (const name of ['libs-real-1', 'libs-real-second-dir']) {
      const src = await writeTree(join(scratch, `${name}-src`), LIBS_FILES);
      await chmod(join(src, 'driver/bpf/configure/build.sh'), 0o755);
      const work = join(scratch, `${name}-work`);
      await mkdir(work);
      const outFile = join(scratch, `${name}.o`);
      const logFile = join(scratch, `${name}.log`);
      const started = performance.now();
      const result = await builder.build({ target, kernelRoot: root, driverDir: src, workDir: work, outFile, logFile });
      t.diagnostic(`${name}: ${result.size} bytes, sha256 ${result.sha256}, ${((performance.now() - started) / 1000).toFixed(1)} s`);
      results.push(result);

      const bytes = await readFile(outFile);
      const elf = checkBpfObject(bytes, outFile);
      const str = (s: string) => sectionContents(bytes, elf, s)?.toString('latin1');
      assert.equal(str('probe_version'), '9.1.0+driver\0');
      assert.equal(str('build_commit'), '9.1.0+driver\0');
      assert.equal(str('kernel_version'), `${kernel.release}\0`);
      assert.equal(sectionContents(bytes, elf, 'api_version')?.readBigUInt64LE(0), (8n << 42n) | (0n << 21n) | 2n);
      assert.equal(sectionContents(bytes, elf, 'schema_version')?.readBigUInt64LE(0), (3n << 42n) | (14n << 21n) | 1n);
      // The configure step ran for real: one check compiles against this kernel, the other cannot.
      assert.equal(str('configure_yes'), 'HAS_TASK_PID_FIELD\0');
      assert.equal(sectionContents(bytes, elf, 'configure_no'), undefined);
      const log = await readFile(logFile, 'utf8');
      assert.match(log, /\[configure-bpf\] Setting HAS_TASK_PID_FIELD flag/);
      assert.match(log, /\[configure-bpf\] HAS_NO_SUCH_FIELD not set: .*no_such_field_in_any_kernel/);
    }
    assert.equal(results[0]?.sha256, results[1]?.sha256, 'the libs-shaped probe depends on where it was built');
  });
});
