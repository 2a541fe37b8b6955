import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, link, lstat, mkdir, readFile, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { gzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import tar from 'tar-stream';

// Builders of test archives: real ones made with the real tools (dpkg-deb,
// rpmbuild, tar), and hand-made ones (ar, tar through tar-stream, cpio, a
// minimal RPM) for the malicious cases those tools refuse to produce. Plus a
// tree listing to compare two extractions.

const run = promisify(execFile);

/** Run a tool with a time bound; returns stdout. */
export async function tool(cmd: string, args: string[], opts: { cwd?: string; input?: Buffer; timeoutMs?: number } = {}): Promise<Buffer> {
  if (opts.input !== undefined) {
    return new Promise((resolve, reject) => {
      const child = execFile(
        cmd,
        args,
        { cwd: opts.cwd, encoding: 'buffer', maxBuffer: 512 * 1024 * 1024, timeout: opts.timeoutMs ?? 60_000 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr.toString()}`));
          else resolve(stdout);
        },
      );
      // A tool that exits before reading all its input closes the pipe: its exit status is the answer, not an EPIPE.
      child.stdin!.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EPIPE') reject(e);
      });
      child.stdin!.end(opts.input);
    });
  }
  const { stdout } = await run(cmd, args, {
    cwd: opts.cwd,
    encoding: 'buffer',
    maxBuffer: 512 * 1024 * 1024,
    timeout: opts.timeoutMs ?? 60_000,
  });
  return stdout;
}

/** Deterministic pseudo-random bytes (so fixtures are the same every run). */
export function pseudoRandom(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A tree shaped like kernel headers: nested folders, an executable, a
 * read-only file, an empty file, a name with spaces, a name longer than
 * ustar's 100 bytes, a relative symlink into a sibling package's folder, an
 * absolute symlink (as lib/modules/<r>/build), and a hard link.
 */
export async function makeSampleTree(root: string): Promise<void> {
  const hdr = join(root, 'usr/src/linux-headers-9.9.9-test');
  const kbuild = join(root, 'usr/lib/linux-kbuild-9.9/scripts');
  await mkdir(join(hdr, 'include/linux'), { recursive: true });
  await mkdir(kbuild, { recursive: true });
  await mkdir(join(root, 'lib/modules/9.9.9-test'), { recursive: true });
  await mkdir(join(root, 'usr/share/doc/sample'), { recursive: true });
  await writeFile(join(hdr, 'Makefile'), 'include /usr/src/linux-headers-9.9.9-common/Makefile\n');
  await writeFile(join(hdr, 'include/linux/big.h'), pseudoRandom(300_000, 7));
  await writeFile(join(kbuild, 'run.sh'), '#!/bin/sh\necho kbuild\n');
  await chmod(join(kbuild, 'run.sh'), 0o755);
  await writeFile(join(root, 'usr/share/doc/sample/readonly'), 'read only\n');
  await chmod(join(root, 'usr/share/doc/sample/readonly'), 0o444);
  await writeFile(join(root, 'usr/share/doc/sample/empty'), '');
  await writeFile(join(root, 'usr/share/doc/sample/name with spaces.txt'), 'spaces\n');
  await writeFile(join(root, 'usr/share/doc/sample', `${'long-name-'.repeat(12)}.h`), 'long\n');
  await symlink('../../lib/linux-kbuild-9.9/scripts', join(hdr, 'scripts'));
  await symlink('/usr/src/linux-headers-9.9.9-test', join(root, 'lib/modules/9.9.9-test/build'));
  await link(join(hdr, 'Makefile'), join(root, 'usr/share/doc/sample/Makefile.hardlink'));
}

export type DebCompression = 'xz' | 'gzip' | 'zstd' | 'none';

/** Build a real .deb of `tree` with dpkg-deb (copies the tree into a package folder with DEBIAN/control). */
export async function buildDebWithDpkg(tree: string, work: string, compression: DebCompression, name = 'fp-sample'): Promise<string> {
  const pkgDir = join(work, `${name}-${compression}`);
  await mkdir(pkgDir, { recursive: true });
  await tool('cp', ['-a', `${tree}/.`, `${pkgDir}/`]);
  await mkdir(join(pkgDir, 'DEBIAN'), { recursive: true });
  await writeFile(
    join(pkgDir, 'DEBIAN/control'),
    `Package: ${name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Tests <tests@example.invalid>\nDescription: falco-probes test package\n`,
  );
  const out = join(work, `${name}_1.0-1_all.${compression}.deb`);
  await tool('dpkg-deb', ['--root-owner-group', `-Z${compression}`, '--build', pkgDir, out]);
  return out;
}

export type RpmPayload = 'xz' | 'zstd' | 'gzip';

/** Build a real .rpm of `tree` with rpmbuild, with the given payload compression. */
export async function buildRpmWithRpmbuild(tree: string, work: string, payload: RpmPayload, name = 'fp-sample'): Promise<string> {
  const top = join(work, `rpmbuild-${payload}`);
  await mkdir(work, { recursive: true });
  const spec = join(work, `${name}-${payload}.spec`);
  const topLevel = (await readdir(tree)).sort();
  await writeFile(
    spec,
    [
      `Name: ${name}`,
      'Version: 1.0',
      'Release: 1',
      'Summary: falco-probes test package',
      'License: MIT',
      'BuildArch: noarch',
      '%description',
      'falco-probes test package',
      '%install',
      'cp -a %{srcroot}/. %{buildroot}/',
      '%files',
      ...topLevel.map((t) => `/${t}`),
      '',
    ].join('\n'),
  );
  const io = { xz: 'w9.xzdio', zstd: 'w19.zstdio', gzip: 'w9.gzdio' }[payload];
  await tool(
    'rpmbuild',
    [
      '-bb',
      '--quiet',
      '--define',
      `_topdir ${top}`,
      '--define',
      `srcroot ${tree}`,
      '--define',
      `_binary_payload ${io}`,
      '--define',
      '__os_install_post %{nil}',
      '--define',
      '_build_id_links none',
      spec,
    ],
    { timeoutMs: 120_000 },
  );
  const dir = join(top, 'RPMS/noarch');
  const [file] = (await readdir(dir)).filter((f) => f.endsWith('.rpm'));
  if (!file) throw new Error(`rpmbuild produced no package in ${dir}`);
  return join(dir, file);
}

// ---- hand-made archives -------------------------------------------------

export interface TarEntrySpec {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  data?: string | Buffer;
  linkname?: string;
  mode?: number;
  /** Declared size when it must differ from the data (a lying header). */
  size?: number;
  uid?: number;
}

export type Compression = 'gz' | 'xz' | 'zst' | 'none';

/** A tar made with tar-stream (it writes whatever names it is given, hostile ones included). */
export async function buildTar(entries: TarEntrySpec[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const data = e.data === undefined ? undefined : Buffer.from(e.data);
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      mtime: new Date(1_700_000_000_000),
      uid: e.uid ?? 0,
      gid: e.uid ?? 0,
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(type === 'file' ? { size: e.size ?? data?.length ?? 0 } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      if (type === 'file') pack.entry(header, data ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
      else pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export async function compress(data: Buffer, how: Compression): Promise<Buffer> {
  switch (how) {
    case 'gz':
      return gzipSync(data);
    case 'xz':
      return tool('xz', ['-c', '-6'], { input: data });
    case 'zst':
      return tool('zstd', ['-c', '-q', '-3'], { input: data });
    case 'none':
      return data;
  }
}

/** An `ar` archive from members (names up to 15 bytes). */
export function buildAr(members: { name: string; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [Buffer.from('!<arch>\n', 'latin1')];
  for (const m of members) {
    const header =
      `${m.name}/`.padEnd(16) +
      '1700000000'.padEnd(12) +
      '0'.padEnd(6) +
      '0'.padEnd(6) +
      '100644'.padEnd(8) +
      String(m.data.length).padEnd(10) +
      '`\n';
    parts.push(Buffer.from(header, 'latin1'), m.data);
    if (m.data.length % 2) parts.push(Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

/** A .deb from a data tar, built by hand (what dpkg-deb would never build). */
export async function buildDebFromTar(dataTar: Buffer, compression: Compression): Promise<Buffer> {
  const control = await buildTar([{ name: './control', data: 'Package: evil\nVersion: 1\nArchitecture: all\n' }]);
  const suffix = compression === 'none' ? '' : `.${compression}`;
  return buildAr([
    { name: 'debian-binary', data: Buffer.from('2.0\n') },
    { name: 'control.tar.gz', data: gzipSync(control) },
    { name: `data.tar${suffix}`, data: await compress(dataTar, compression) },
  ]);
}

export interface CpioEntrySpec {
  name: string;
  /** Full st_mode, type bits included (0o100644 a file, 0o040755 a folder, 0o120777 a symlink, 0o020644 a char device). */
  mode: number;
  data?: string | Buffer;
  ino?: number;
  nlink?: number;
}

/** A cpio archive in `newc` (070701) or `crc` (070702) format. */
export function buildCpio(entries: CpioEntrySpec[], magic: '070701' | '070702' = '070701'): Buffer {
  const parts: Buffer[] = [];
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, '0');
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const add = (e: CpioEntrySpec) => {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    const name = Buffer.from(`${e.name}\0`);
    let sum = 0;
    if (magic === '070702') for (const b of data) sum = (sum + b) >>> 0;
    const header =
      magic + [e.ino ?? ino++, e.mode, 0, 0, e.nlink ?? 1, 1_700_000_000, data.length, 0, 0, 0, 0, name.length, sum].map(hex).join('');
    parts.push(Buffer.from(header, 'latin1'), name, pad(110 + name.length), data, pad(data.length));
  };
  for (const e of entries) add(e);
  add({ name: 'TRAILER!!!', mode: 0, ino: 0 });
  return Buffer.concat(parts);
}

/** A minimal RPM around a cpio payload: lead, an empty signature header, a main header with the payload tags. */
export async function buildRpmFromCpio(cpio: Buffer, compressor: 'gzip' | 'xz' | 'zstd', name = 'evil'): Promise<Buffer> {
  const lead = Buffer.alloc(96);
  lead.writeUInt32BE(0xedabeedb, 0);
  lead[4] = 3;
  lead[5] = 0;
  Buffer.from(name).copy(lead, 10, 0, 65);
  lead.writeUInt16BE(5, 78); // signature type: header-style
  const header = (tags: [number, string][]) => {
    const store: Buffer[] = [];
    const index: Buffer[] = [];
    let offset = 0;
    for (const [tag, value] of tags) {
      const e = Buffer.alloc(16);
      e.writeUInt32BE(tag, 0);
      e.writeUInt32BE(6, 4);
      e.writeUInt32BE(offset, 8);
      e.writeUInt32BE(1, 12);
      index.push(e);
      const v = Buffer.from(`${value}\0`);
      store.push(v);
      offset += v.length;
    }
    const intro = Buffer.alloc(16);
    intro.writeUInt32BE(0x8eade801, 0);
    intro.writeUInt32BE(tags.length, 8);
    intro.writeUInt32BE(offset, 12);
    return Buffer.concat([intro, ...index, ...store]);
  };
  const sig = header([[1000, 'x']]); // 16 + 16 + 2 = 34 bytes: needs padding to 8
  const sigPad = Buffer.alloc((8 - (sig.length % 8)) % 8);
  const main = header([
    [1000, name],
    [1124, 'cpio'],
    [1125, compressor],
  ]);
  const how: Compression = compressor === 'gzip' ? 'gz' : compressor === 'xz' ? 'xz' : 'zst';
  return Buffer.concat([lead, sig, sigPad, main, await compress(cpio, how)]);
}

// ---- comparing trees ----------------------------------------------------

export interface TreeItem {
  path: string;
  type: 'dir' | 'file' | 'symlink';
  mode?: number;
  size?: number;
  sha256?: string;
  target?: string;
  nlink?: number;
}

/**
 * Every item under `root`, sorted. With `relativizeAbsoluteLinks`, absolute
 * symlink targets are shown as the relative target our extractor writes
 * (the tree taken as `/`), so a reference tree from dpkg-deb or cpio compares.
 */
export async function listTree(root: string, opts: { relativizeAbsoluteLinks?: boolean; dirModes?: boolean } = {}): Promise<TreeItem[]> {
  const items: TreeItem[] = [];
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, p));
      if (st.isDirectory()) {
        items.push({ path: p, type: 'dir', ...(opts.dirModes ? { mode: st.mode & 0o7777 } : {}) });
        await walk(p);
      } else if (st.isSymbolicLink()) {
        let target = await readlink(join(root, p));
        if (opts.relativizeAbsoluteLinks && target.startsWith('/')) {
          const rewritten = posix.relative(posix.dirname(`/${p}`), posix.normalize(target));
          target = rewritten === '' ? '.' : rewritten;
        }
        items.push({ path: p, type: 'symlink', target });
      } else if (st.isFile()) {
        const data = await readFile(join(root, p));
        items.push({
          path: p,
          type: 'file',
          mode: st.mode & 0o7777,
          size: st.size,
          sha256: createHash('sha256').update(data).digest('hex'),
          nlink: st.nlink,
        });
      } else {
        items.push({ path: p, type: 'file', target: 'SPECIAL' });
      }
    }
  };
  await walk('');
  return items;
}

// ---- real Debian packages through apt -----------------------------------

export interface AptRecord {
  Package: string;
  Version: string;
  Architecture: string;
  Filename: string;
  Size: number;
  SHA256: string;
}

/** The candidate record of a package in this machine's apt index (`apt-cache show`, first stanza). */
export async function aptShow(name: string): Promise<AptRecord | undefined> {
  let out: string;
  try {
    out = (await tool('apt-cache', ['show', '--no-all-versions', name])).toString('utf8');
  } catch {
    return undefined;
  }
  const fields = new Map<string, string>();
  for (const line of out.split('\n\n')[0]!.split('\n')) {
    const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
    if (m) fields.set(m[1]!, m[2]!);
  }
  const get = (k: string) => fields.get(k) ?? '';
  if (!get('Filename') || !get('SHA256')) return undefined;
  return {
    Package: get('Package'),
    Version: get('Version'),
    Architecture: get('Architecture'),
    Filename: get('Filename'),
    Size: Number(get('Size')),
    SHA256: get('SHA256'),
  };
}

/** Names in the apt index matching a regular expression (`apt-cache search --names-only`), sorted. */
export async function aptSearchNames(pattern: string): Promise<string[]> {
  const out = (await tool('apt-cache', ['search', '--names-only', pattern])).toString('utf8');
  return out
    .split('\n')
    .map((l) => l.split(' - ')[0]!.trim())
    .filter(Boolean)
    .sort();
}

/** `apt-get download` into `dir` (made writable for `_apt`); returns the .deb's path. */
export async function aptDownload(name: string, version: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await tool('chown', ['_apt', dir]).catch(() => undefined);
  await tool('apt-get', ['download', '-q', `${name}=${version}`], { cwd: dir, timeoutMs: 180_000 });
  const [file] = (await readdir(dir)).filter((f) => f.startsWith(`${name}_`) && f.endsWith('.deb'));
  if (!file) throw new Error(`apt-get download ${name}=${version} left no .deb in ${dir}`);
  return join(dir, file);
}

export const isRoot = process.getuid?.() === 0;
