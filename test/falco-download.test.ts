import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withTempDir } from './helpers/cli.js';
import { startMirror } from './helpers/server.js';
import { sha256Hex } from '../src/util/hash.js';
import { readIndex, writeIndex } from '../src/repository/index-file.js';
import { publishRepository } from '../src/repository/publish.js';
import { createMemoryLogger } from '../src/util/log.js';
import type { ProbeEntry } from '../src/repository/types.js';

// The published tree serves Falco's loaders as they are: a published
// directory on a loopback HTTP server, and a probe fetched with curl from a
// URL put together the way falco-driver-loader does it (DRIVERS_REPO, a
// comma-separated list tried in order; driver version; arch; target id;
// release; kernelversion; every `+` sent as %2B), in the current layout and in
// the older one without the arch folder. The bytes must be the index's.

interface Kernel {
  targetId: string;
  release: string;
  kernelVersion: string;
  arch: 'x86_64' | 'aarch64';
  os: string;
}

const DRIVER_VERSION = '9.1.0+driver';
const KERNELS: Kernel[] = [
  { os: 'debian12', targetId: 'debian', release: '6.12.117+deb12-amd64', kernelVersion: '1', arch: 'x86_64' },
  { os: 'ubuntu2204', targetId: 'ubuntu-generic', release: '6.2.0-26-generic', kernelVersion: '26~22.04.1', arch: 'x86_64' },
  { os: 'amazonlinux2', targetId: 'amazonlinux2', release: '5.10.186-179.751.amzn2.aarch64', kernelVersion: '1', arch: 'aarch64' },
];

// What falco-driver-loader does, in shell: build the URL from its variables,
// turn every + into %2B, try each repository of DRIVERS_REPO in order with curl.
const LOADER = [
  'set -u',
  'file="falco_${TARGET_ID}_${KERNEL_RELEASE}_${KERNEL_VERSION}.o"',
  'if [ -n "$ARCH_FOLDER" ]; then path="$DRIVER_VERSION/$ARCH/$file"; else path="$DRIVER_VERSION/$file"; fi',
  'IFS=,',
  'for repo in $DRIVERS_REPO; do',
  '  url=$(printf "%s/%s" "$repo" "$path" | sed "s/+/%2B/g")',
  '  if curl --create-dirs -fsS --connect-timeout 5 --max-time 30 -o "$OUT" "$url"; then echo "$url"; exit 0; fi',
  'done',
  'exit 1',
].join('\n');

/** Run the loader snippet (asynchronously: the HTTP server lives in this process). */
function loaderFetch(env: Record<string, string>): Promise<{ status: number | null; url: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', LOADER], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, url: stdout.trim(), stderr });
    });
  });
}

test('Falco-style download over loopback HTTP returns the bytes the index names (arch layout, no-arch layout, repo list)', async () => {
  await withTempDir(async (dir) => {
    const local = join(dir, 'repository');
    const entries: ProbeEntry[] = [];
    for (const [i, k] of KERNELS.entries()) {
      const file = `${DRIVER_VERSION}/${k.arch}/falco_${k.targetId}_${k.release}_${k.kernelVersion}.o`;
      const bytes = Buffer.from(`\x7fELF probe ${i} for ${k.release} `.repeat(64 + i));
      await mkdir(join(local, file, '..'), { recursive: true });
      await writeFile(join(local, file), bytes);
      entries.push({
        file,
        key: sha256Hex(file),
        sha256: sha256Hex(bytes),
        size: bytes.length,
        os: k.os,
        kernel: k.release,
        driver: 'falco',
        driverVersion: DRIVER_VERSION,
        arch: k.arch,
        kind: 'bpf',
      });
    }
    await writeIndex(local, { version: 1, probes: entries });
    const site = join(dir, 'site');
    await publishRepository({ from: local, to: site, logger: createMemoryLogger() });
    const index = await readIndex(site);

    const empty = await startMirror({ files: {} }); // a first DRIVERS_REPO entry that has nothing
    const mirror = await startMirror({ root: site });
    try {
      for (const k of KERNELS) {
        const want = index.probes.find(
          (p) => p.file.endsWith(`falco_${k.targetId}_${k.release}_${k.kernelVersion}.o`) && p.arch === k.arch,
        )!;
        const vars = { DRIVER_VERSION, ARCH: k.arch, TARGET_ID: k.targetId, KERNEL_RELEASE: k.release, KERNEL_VERSION: k.kernelVersion };

        const out = join(dir, 'dl', k.arch, `${k.release}.o`);
        const got = await loaderFetch({ ...vars, DRIVERS_REPO: `${empty.url}/driver,${mirror.url}`, ARCH_FOLDER: '1', OUT: out });
        assert.equal(got.status, 0, got.stderr);
        assert.equal(sha256Hex(await readFile(out)), want.sha256, `${got.url}: bytes differ from the index`);
        if (k.release.includes('+')) assert.match(got.url, /%2Bdeb12/);
        assert.ok(got.url.startsWith(`${mirror.url}/9.1.0%2Bdriver/${k.arch}/`), got.url);

        // Loaders before the arch folder: x86_64 probes are there too; aarch64 never had that layout.
        const legacyOut = join(dir, 'dl-legacy', `${k.release}.o`);
        const legacy = await loaderFetch({ ...vars, DRIVERS_REPO: mirror.url, ARCH_FOLDER: '', OUT: legacyOut });
        if (k.arch === 'x86_64') {
          assert.equal(legacy.status, 0, legacy.stderr);
          assert.equal(sha256Hex(await readFile(legacyOut)), want.sha256);
        } else {
          assert.notEqual(legacy.status, 0);
          assert.match(legacy.stderr, /404/);
        }
      }
      // Every request the loaders made was for a file the repository lists: no probing of other names.
      assert.ok(
        mirror.requests.every((r) => r.startsWith('9.1.0+driver/')),
        mirror.requests.join('\n'),
      );
    } finally {
      await mirror.close();
      await empty.close();
    }
  });
});
