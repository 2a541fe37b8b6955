import { FalcoProbesError } from '../util/errors.js';

// A small ELF reader: enough to tell that a compiler's output is a BPF
// relocatable object and to list its sections, without depending on binutils
// being installed where the tool runs.

export const ET_REL = 1;
export const EM_BPF = 247;

export interface ElfInfo {
  bits: 32 | 64;
  littleEndian: boolean;
  /** e_type (1: relocatable). */
  type: number;
  /** e_machine (247: BPF). */
  machine: number;
  /** Section names in section-header order (index 0, the null section, is left out). */
  sections: string[];
  /** The same sections with their type, file offset and size. */
  sectionHeaders: ElfSection[];
}

export interface ElfSection {
  name: string;
  /** sh_type (1: PROGBITS, 2: SYMTAB, 9: REL, ...). */
  type: number;
  offset: number;
  size: number;
}

/** The bytes of a section (none for SHT_NOBITS), or undefined when there is no section of that name. */
export function sectionContents(buf: Uint8Array, info: ElfInfo, name: string): Buffer | undefined {
  const s = info.sectionHeaders.find((h) => h.name === name);
  if (!s) return undefined;
  if (s.type === 8) return Buffer.alloc(0);
  return Buffer.from(buf.buffer, buf.byteOffset + s.offset, s.size);
}

class ElfFormatError extends Error {}

function need(buf: Uint8Array, offset: number, length: number, what: string): void {
  if (offset < 0 || length < 0 || offset + length > buf.length)
    throw new ElfFormatError(`${what} at offset ${offset} (+${length}) lies outside the ${buf.length}-byte file`);
}

/** Parse the ELF header and the section names; throws on anything that is not a well-formed ELF file. */
function parseElf(buf: Uint8Array): ElfInfo {
  need(buf, 0, 16, 'e_ident');
  if (buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46) throw new ElfFormatError('no ELF magic (\\x7fELF)');
  const elfClass = buf[4];
  const data = buf[5];
  if (elfClass !== 1 && elfClass !== 2) throw new ElfFormatError(`unknown EI_CLASS ${elfClass}`);
  if (data !== 1 && data !== 2) throw new ElfFormatError(`unknown EI_DATA ${data}`);
  const bits = elfClass === 2 ? 64 : 32;
  const le = data === 1;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const u16 = (o: number) => {
    need(buf, o, 2, 'u16');
    return view.getUint16(o, le);
  };
  const u32 = (o: number) => {
    need(buf, o, 4, 'u32');
    return view.getUint32(o, le);
  };
  const addr = (o: number): number => {
    if (bits === 32) return u32(o);
    need(buf, o, 8, 'u64');
    const v = view.getBigUint64(o, le);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfFormatError(`offset ${v} too large`);
    return Number(v);
  };

  const headerSize = bits === 64 ? 64 : 52;
  need(buf, 0, headerSize, 'ELF header');
  const type = u16(16);
  const machine = u16(18);
  const shoff = addr(bits === 64 ? 0x28 : 0x20);
  const shentsize = u16(bits === 64 ? 0x3a : 0x2e);
  let shnum = u16(bits === 64 ? 0x3c : 0x30);
  let shstrndx = u16(bits === 64 ? 0x3e : 0x32);

  const sections: string[] = [];
  const sectionHeaders: ElfSection[] = [];
  if (shoff === 0) return { bits, littleEndian: le, type, machine, sections, sectionHeaders };
  const minEntry = bits === 64 ? 64 : 40;
  if (shentsize < minEntry) throw new ElfFormatError(`section header entries of ${shentsize} bytes (expected ${minEntry})`);
  // Extended numbering: the real counts live in section 0.
  const sh = (i: number) => shoff + i * shentsize;
  need(buf, sh(0), shentsize, 'section header 0');
  if (shnum === 0) shnum = bits === 64 ? Number(addr(sh(0) + 0x20)) : u32(sh(0) + 0x14);
  if (shstrndx === 0xffff) shstrndx = u32(sh(0) + (bits === 64 ? 0x28 : 0x18));
  need(buf, shoff, shnum * shentsize, 'section header table');
  if (shstrndx >= shnum) throw new ElfFormatError(`e_shstrndx ${shstrndx} >= e_shnum ${shnum}`);

  const offsetOf = (i: number) => addr(sh(i) + (bits === 64 ? 0x18 : 0x10));
  const sizeOf = (i: number) => addr(sh(i) + (bits === 64 ? 0x20 : 0x14));
  const strOff = offsetOf(shstrndx);
  const strSize = sizeOf(shstrndx);
  need(buf, strOff, strSize, 'section name table');
  for (let i = 1; i < shnum; i++) {
    const nameOff = u32(sh(i));
    if (nameOff >= strSize) throw new ElfFormatError(`section ${i}: name offset ${nameOff} outside the name table`);
    let end = strOff + nameOff;
    while (end < strOff + strSize && buf[end] !== 0) end++;
    const name = Buffer.from(buf.buffer, buf.byteOffset + strOff + nameOff, end - strOff - nameOff).toString('latin1');
    const shType = u32(sh(i) + 4);
    const offset = offsetOf(i);
    const size = sizeOf(i);
    if (shType !== 8 /* SHT_NOBITS */) need(buf, offset, size, `section ${name}`);
    sections.push(name);
    sectionHeaders.push({ name, type: shType, offset, size });
  }
  return { bits, littleEndian: le, type, machine, sections, sectionHeaders };
}

/** Read an ELF file's header and section names. Throws a FalcoProbesError('input') naming `file` when malformed. */
export function readElf(buf: Uint8Array, file: string): ElfInfo {
  try {
    return parseElf(buf);
  } catch (err) {
    if (err instanceof ElfFormatError) throw new FalcoProbesError('input', `not a valid ELF file: ${err.message}`, { location: { file } });
    throw err;
  }
}

/** parseElf of a build's output: a file that is not ELF is the build's error, naming the file. */
function parseBuildOutput(buf: Uint8Array, file: string): ElfInfo {
  try {
    return parseElf(buf);
  } catch (err) {
    if (err instanceof ElfFormatError)
      throw new FalcoProbesError('build', `the build's output is not an ELF file: ${err.message}`, { location: { file } });
    throw err;
  }
}

/**
 * Check that a compiler's output is what a loader can take: an ELF
 * relocatable object (e_type 1) for the BPF machine (e_machine 247).
 */
export function checkBpfObject(buf: Uint8Array, file: string): ElfInfo {
  const info = parseBuildOutput(buf, file);
  if (info.type !== ET_REL)
    throw new FalcoProbesError('build', `the build's output is ELF type ${info.type}, not a relocatable object (1)`, {
      location: { file },
    });
  if (info.machine !== EM_BPF)
    throw new FalcoProbesError('build', `the build's output is for ELF machine ${info.machine}, not BPF (${EM_BPF})`, {
      location: { file },
      hint: 'the probe Makefile must compile with llc -march=bpf (or clang -target bpf)',
    });
  return info;
}

const MODULE_MACHINES: Record<number, string> = { 62: 'x86_64', 183: 'aarch64' };

/** The `key=value` strings of a module's `.modinfo` section. */
export function moduleInfo(buf: Uint8Array, info: ElfInfo): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const modinfo = sectionContents(buf, info, '.modinfo');
  if (!modinfo) return out;
  for (const entry of modinfo.toString('latin1').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const key = entry.slice(0, eq);
    out.set(key, [...(out.get(key) ?? []), entry.slice(eq + 1)]);
  }
  return out;
}

/**
 * Check that a build's output is a kernel module for `release`: an ELF
 * relocatable object for x86_64 or aarch64 whose `.modinfo` vermagic starts
 * with the release (the first thing the kernel checks when loading it).
 */
export function checkKernelModule(buf: Uint8Array, file: string, release: string): ElfInfo {
  const info = parseBuildOutput(buf, file);
  if (info.type !== ET_REL)
    throw new FalcoProbesError('build', `the build's output is ELF type ${info.type}, not a relocatable module (1)`, {
      location: { file },
    });
  if (MODULE_MACHINES[info.machine] === undefined)
    throw new FalcoProbesError('build', `the build's output is for ELF machine ${info.machine}, not x86_64 or aarch64`, {
      location: { file },
    });
  const vermagic = moduleInfo(buf, info).get('vermagic')?.[0];
  if (vermagic === undefined)
    throw new FalcoProbesError('build', "the build's output has no vermagic in .modinfo: not a kernel module", { location: { file } });
  if (!vermagic.startsWith(`${release} `))
    throw new FalcoProbesError('build', `the module's vermagic is ${JSON.stringify(vermagic)}, not for kernel ${release}`, {
      location: { file },
    });
  return info;
}
