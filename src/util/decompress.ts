import { open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { Transform, type TransformCallback } from 'node:stream';
import { createRequire } from 'node:module';
import { Decompress as ZstdDecompress } from 'fzstd';

// Decompression as streams. gzip is built into Node; xz uses lzma-native
// (bindings to the system-grade liblzma, prebuilt for linux-x64, streaming);
// zstd uses fzstd (pure JavaScript, streaming, no native build). Node 20's
// zlib has no zstd and no xz.

const require = createRequire(import.meta.url);

export type Compression = 'gz' | 'xz' | 'zst' | 'none';

export function compressionOf(fileName: string): Compression {
  if (fileName.endsWith('.gz') || fileName.endsWith('.tgz')) return 'gz';
  if (fileName.endsWith('.xz')) return 'xz';
  if (fileName.endsWith('.zst') || fileName.endsWith('.zstd')) return 'zst';
  return 'none';
}

/** Compression by magic bytes (for payloads whose name does not say). */
export function sniffCompression(head: Uint8Array): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gz';
  if (head[0] === 0xfd && head[1] === 0x37 && head[2] === 0x7a && head[3] === 0x58 && head[4] === 0x5a) return 'xz';
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zst';
  return 'none';
}

/** A file's compression, by its first bytes. */
export async function sniffFileCompression(file: string): Promise<Compression> {
  const head = Buffer.alloc(6);
  const fh = await open(file, 'r');
  try {
    await fh.read(head, 0, 6, 0);
  } finally {
    await fh.close();
  }
  return sniffCompression(head);
}

export function createDecompressor(kind: Compression): Transform {
  switch (kind) {
    case 'gz':
      return createGunzip();
    case 'xz': {
      const lzma = require('lzma-native') as { createDecompressor(): Transform };
      return lzma.createDecompressor();
    }
    case 'zst':
      return createZstdDecompressor();
    case 'none':
      return new Transform({
        transform(chunk, _e, cb) {
          cb(null, chunk);
        },
      });
  }
}

function createZstdDecompressor(): Transform {
  let decoder: ZstdDecompress;
  const t = new Transform({
    transform(chunk: Buffer, _e, cb: TransformCallback) {
      try {
        decoder.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
        cb();
      } catch (err) {
        cb(new Error(`zstd: ${(err as Error).message}`));
      }
    },
    flush(cb) {
      try {
        decoder.push(new Uint8Array(0), true);
        cb();
      } catch (err) {
        cb(new Error(`zstd: ${(err as Error).message}`));
      }
    },
  });
  decoder = new ZstdDecompress((data) => {
    t.push(Buffer.from(data.buffer, data.byteOffset, data.length));
  });
  return t;
}
