import http from 'node:http';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import tar from 'tar-stream';

// A loopback stand-in for Google's cos-tools bucket: objects served at
// `/<bucket>/<name>` as storage.googleapis.com serves them, and the JSON API
// object listing at `/storage/v1/b/<bucket>/o?prefix=...&pageToken=...`
// (items sorted by name, `size` as a string, `md5Hash` in base64, a
// `nextPageToken` while more remain). Headers tarballs are built as COS ships
// them: `usr/src/linux-headers-<release>/` with the kernel's generated headers.

export interface CosHeadersSpec {
  /** `uname -r`: `6.1.100+`. */
  release: string;
  /** `uname -v`: `#1 SMP PREEMPT_DYNAMIC ...`. */
  version: string;
  machine?: string;
  /** Where UTS_VERSION is: utsversion.h (Linux 6.0 and later, the default) or compile.h. */
  versionIn?: 'utsversion' | 'compile';
  /** Prefix entry names with `./`. */
  dotSlash?: boolean;
  /** Entry mtimes: two builds of one kernel give different bytes. */
  mtime?: Date;
  /** Leave out utsrelease.h (the folder name then gives the release). */
  noUtsRelease?: boolean;
  /** Number of filler header files (size realism). */
  fillers?: number;
  /** Size of each filler file: C-like text that compresses about as well as kernel headers. */
  fillerBytes?: number;
}

/** Deterministic C-header-like text of about `size` bytes. */
function headerText(seed: number, size: number): string {
  const words = [
    'struct',
    'unsigned',
    'long',
    'int',
    'static',
    'inline',
    'const',
    'void',
    'return',
    'define',
    'ifdef',
    'endif',
    'u32',
    'u64',
    'size_t',
  ];
  let x = seed * 2654435761 + 1;
  const next = () => (x = (x * 1103515245 + 12345) >>> 0);
  const out: string[] = [];
  let n = 0;
  while (n < size) {
    const line = `#define ${words[next() % words.length]!.toUpperCase()}_${(next() % 100000).toString(36)} (${words[next() % words.length]} ${next() % 65536})\n`;
    out.push(line);
    n += line.length;
  }
  return out.join('');
}

/** A kernel-headers.tgz, gzip-compressed. */
export async function cosHeadersTarball(spec: CosHeadersSpec): Promise<Buffer> {
  const pack = tar.pack();
  const dir = `${spec.dotSlash ? './' : ''}usr/src/linux-headers-${spec.release}`;
  const mtime = spec.mtime ?? new Date('2024-01-01T00:00:00Z');
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(c as Buffer));
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  const entry = (name: string, body?: string) =>
    new Promise<void>((resolve, reject) => {
      if (body === undefined) pack.entry({ name, type: 'directory', mode: 0o755, mtime }, (err) => (err ? reject(err) : resolve()));
      else pack.entry({ name, mode: 0o644, mtime }, body, (err) => (err ? reject(err) : resolve()));
    });
  for (const d of ['usr', 'usr/src']) await entry(`${spec.dotSlash ? './' : ''}${d}`);
  await entry(dir);
  await entry(`${dir}/Makefile`, `VERSION = ${spec.release.split('.')[0]}\nPATCHLEVEL = ${spec.release.split('.')[1]}\n# kbuild\n`);
  await entry(`${dir}/.config`, '# Automatically generated file; DO NOT EDIT.\nCONFIG_BPF=y\nCONFIG_BPF_SYSCALL=y\n');
  await entry(`${dir}/include`);
  await entry(`${dir}/include/generated`);
  for (let i = 0; i < (spec.fillers ?? 20); i++)
    await entry(
      `${dir}/include/linux/filler${i}.h`,
      spec.fillerBytes ? headerText(i, spec.fillerBytes) : `/* filler ${i} */\n#define FILLER_${i} ${i}\n`.repeat(20),
    );
  if (!spec.noUtsRelease) await entry(`${dir}/include/generated/utsrelease.h`, `#define UTS_RELEASE "${spec.release}"\n`);
  const compile = [
    '/* This file is auto generated, version 1 */',
    `#define UTS_MACHINE "${spec.machine ?? 'x86_64'}"`,
    ...((spec.versionIn ?? 'utsversion') === 'compile' ? [`#define UTS_VERSION "${spec.version}"`] : []),
    '#define LINUX_COMPILE_BY "builder"',
    '#define LINUX_COMPILE_HOST "cos-builder"',
    '#define LINUX_COMPILER "Chromium OS 17.0_pre498229-r33 clang version 17.0.0, LLD 17.0.0"',
  ].join('\n');
  await entry(`${dir}/include/generated/compile.h`, `${compile}\n`);
  if ((spec.versionIn ?? 'utsversion') === 'utsversion')
    await entry(`${dir}/include/generated/utsversion.h`, `#define UTS_VERSION "${spec.version}"\n`);
  pack.finalize();
  await done;
  return gzipSync(Buffer.concat(chunks));
}

export interface CosBucket {
  url: string;
  /** `--mirror` values for the shipped cos definition. */
  headersBase: string;
  listingBase: string;
  objects: Map<string, Buffer>;
  /** Request paths (with query) seen. */
  requests: string[];
  /** Replace the listing's answer (e.g. an HTML error page) while set. */
  listingOverride?: { status: number; type: string; body: string };
  /** Object names whose listed MD5 is wrong (the bytes served are not the ones listed). */
  wrongMd5: Set<string>;
  close(): Promise<void>;
}

export async function startCosBucket(opts: { bucket?: string; objects: Map<string, Buffer>; pageSize?: number }): Promise<CosBucket> {
  const bucket = opts.bucket ?? 'cos-tools';
  const pageSize = opts.pageSize ?? 1000;
  const requests: string[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const state: CosBucket = {
    url: '',
    headersBase: '',
    listingBase: '',
    objects: opts.objects,
    requests,
    wrongMd5: new Set(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(`${url.pathname}${url.search}`);
    if (url.pathname === `/storage/v1/b/${bucket}/o`) {
      if (state.listingOverride) {
        res.writeHead(state.listingOverride.status, { 'content-type': state.listingOverride.type });
        res.end(state.listingOverride.body);
        return;
      }
      const prefix = url.searchParams.get('prefix') ?? '';
      const start = Number(url.searchParams.get('pageToken') ? Buffer.from(url.searchParams.get('pageToken')!, 'base64').toString() : '0');
      const names = [...state.objects.keys()].filter((n) => n.startsWith(prefix)).sort();
      const page = names.slice(start, start + pageSize);
      const items = page.map((name) => {
        const data = state.objects.get(name)!;
        const md5 = createHash('md5')
          .update(state.wrongMd5.has(name) ? Buffer.from('other bytes') : data)
          .digest('base64');
        return {
          kind: 'storage#object',
          id: `${bucket}/${name}/1700000000000000`,
          name,
          bucket,
          generation: '1700000000000000',
          contentType: 'application/octet-stream',
          size: String(data.length),
          md5Hash: md5,
          crc32c: 'AAAAAA==',
          etag: 'CAE=',
        };
      });
      const body: Record<string, unknown> = { kind: 'storage#objects', items };
      if (start + pageSize < names.length) body['nextPageToken'] = Buffer.from(String(start + pageSize)).toString('base64');
      const text = JSON.stringify(body, null, 1);
      res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    const prefix = `/${bucket}/`;
    const data = url.pathname.startsWith(prefix) ? state.objects.get(decodeURIComponent(url.pathname.slice(prefix.length))) : undefined;
    if (!data) {
      res.writeHead(404, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0"?><Error><Code>NoSuchKey</Code></Error>');
      return;
    }
    res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/x-tar' });
    res.end(data);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  state.url = `http://127.0.0.1:${port}`;
  state.headersBase = `${state.url}/${bucket}`;
  state.listingBase = `${state.url}/storage/v1/b/${bucket}/o`;
  return state;
}

/** The objects a COS build leaves in the bucket besides its headers. */
export function cosBuildObjects(buildId: string, headers?: Buffer): [string, Buffer][] {
  return [
    ...(headers ? ([[`${buildId}/kernel-headers.tgz`, headers]] as [string, Buffer][]) : []),
    [`${buildId}/kernel_commit`, Buffer.from('934359bdc0f1081eed66a6db8dba3ea7c2948d3c\n')],
    [`${buildId}/kernel-src.tar.gz`, Buffer.from('not really a tarball')],
    [`${buildId}/toolchain_url`, Buffer.from('2023/10/x86_64-cros-linux-gnu-2023.10.01.tar.xz\n')],
    [`${buildId}/lakitu/gpu_driver_versions.textproto`, Buffer.from('default_version: "535.183.01"\n')],
  ];
}

export interface CosFixtureBuild {
  buildId: string;
  headers?: CosHeadersSpec;
}

const V = (date: string) => `#1 SMP PREEMPT_DYNAMIC ${date}`;

/**
 * Builds of the shipped definition's four milestones, with the odd cases:
 * a branch point (.0.0), two builds sharing one kernel, a rebuilt kernel
 * under the same release (another uname -v), a build without headers.
 */
export const COS_FIXTURE_BUILDS: CosFixtureBuild[] = [
  { buildId: '18613.0.0', headers: { release: '6.1.55+', version: V('Mon Oct  9 10:00:00 UTC 2023') } },
  { buildId: '18613.0.79', headers: { release: '6.1.58+', version: V('Sat Nov  4 10:17:46 UTC 2023'), dotSlash: true } },
  {
    buildId: '18613.263.24',
    headers: { release: '6.1.85+', version: V('Tue Apr 16 09:12:00 UTC 2024'), mtime: new Date('2024-04-16T09:00:00Z') },
  },
  // The same kernel as 18613.263.24 (same release and uname -v), another tarball.
  {
    buildId: '18613.263.75',
    headers: { release: '6.1.85+', version: V('Tue Apr 16 09:12:00 UTC 2024'), mtime: new Date('2024-05-20T09:00:00Z') },
  },
  { buildId: '18613.339.26', headers: { release: '6.1.100+', version: V('Fri Aug  2 18:00:00 UTC 2024') } },
  // Rebuilt: the same release, another uname -v. Falco's loader cannot tell the two apart.
  { buildId: '18613.339.52', headers: { release: '6.1.100+', version: V('Thu Sep 12 07:30:00 UTC 2024') } },
  // Listed, but without headers.
  { buildId: '18613.400.1' },
  { buildId: '18867.90.38', headers: { release: '6.6.56+', version: V('Wed Nov 13 12:00:00 UTC 2024') } },
  { buildId: '18867.199.52', headers: { release: '6.6.72+', version: V('Sat Feb  8 08:00:00 UTC 2025'), noUtsRelease: true } },
  { buildId: '19216.104.5', headers: { release: '6.6.87+', version: V('Mon Jun  2 10:00:00 UTC 2025') } },
  { buildId: '19506.448.20', headers: { release: '6.12.40+', version: V('Tue Mar  3 03:03:03 UTC 2026') } },
];

export async function cosFixtureObjects(builds: CosFixtureBuild[] = COS_FIXTURE_BUILDS, fillers = 20): Promise<Map<string, Buffer>> {
  const objects = new Map<string, Buffer>();
  for (const b of builds)
    for (const [name, data] of cosBuildObjects(b.buildId, b.headers ? await cosHeadersTarball({ fillers, ...b.headers }) : undefined))
      objects.set(name, data);
  // Other things the bucket holds.
  objects.set('scripts/disable_smt.sh', Buffer.from('#!/bin/bash\n'));
  return objects;
}
