// The parts of an ELF executable that booting needs and that the section
// reader in builders/elf.ts does not give: the program interpreter (a
// dynamically linked program needs its loader and libraries in the guest;
// busybox must be static) and the PVH entry note (qemu can enter an
// uncompressed kernel directly only when it carries one). 64-bit
// little-endian only: the x86_64 and aarch64 programs this runs.

const PT_INTERP = 3;
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit entry point qemu uses for PVH boot. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

interface ProgramHeader {
  type: number;
  offset: number;
  size: number;
}

function programHeaders(buf: Uint8Array): ProgramHeader[] | undefined {
  if (buf.length < 64 || buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46) return undefined;
  if (buf[4] !== 2 || buf[5] !== 1) return undefined; // ELFCLASS64, little-endian
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  if (phentsize < 56 || phoff + phnum * phentsize > buf.length) return undefined;
  const out: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const offset = Number(view.getBigUint64(at + 8, true));
    const size = Number(view.getBigUint64(at + 32, true)); // p_filesz
    if (offset + size > buf.length) return undefined;
    out.push({ type: view.getUint32(at, true), offset, size });
  }
  return out;
}

export function isElf64(buf: Uint8Array): boolean {
  return programHeaders(buf) !== undefined;
}

/** The program interpreter (`/lib64/ld-linux-x86-64.so.2`), or undefined for a static program (or not an ELF64 file). */
export function elfInterpreter(buf: Uint8Array): string | undefined {
  const interp = programHeaders(buf)?.find((h) => h.type === PT_INTERP);
  if (!interp) return undefined;
  return Buffer.from(buf.buffer, buf.byteOffset + interp.offset, interp.size)
    .toString('latin1')
    .replace(/\0.*$/s, '');
}

/** Whether an uncompressed kernel (`vmlinux`) carries the Xen PVH entry note that qemu's `-kernel` needs to boot it. */
export function hasPvhEntryNote(buf: Uint8Array): boolean {
  const headers = programHeaders(buf);
  if (!headers) return false;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const h of headers) {
    if (h.type !== PT_NOTE) continue;
    let at = h.offset;
    const end = h.offset + h.size;
    while (at + 12 <= end) {
      const namesz = view.getUint32(at, true);
      const descsz = view.getUint32(at + 4, true);
      const type = view.getUint32(at + 8, true);
      const name = Buffer.from(buf.buffer, buf.byteOffset + at + 12, Math.max(0, Math.min(namesz, end - at - 12)))
        .toString('latin1')
        .replace(/\0.*$/s, '');
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      at += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
