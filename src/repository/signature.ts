import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { FalcoProbesError } from '../util/errors.js';
import { pathExists, writeFileAtomic } from '../util/fs.js';
import { sha256Hex } from '../util/hash.js';
import { INDEX_FILE, SUMS_FILE } from './types.js';

// The repository's detached signature (docs/PUBLISHING.md, "Signature").
// An ed25519 key signs a short statement that names index.json and
// SHA256SUMS by sha256 and size; the index names every probe by sha256, so
// one signature covers every byte a client downloads. The statement is
// plain text so anyone can check it with openssl instead of this tool.

export const SIGNATURE_FORMAT = 'falco-probes-signature-v1';
const STATEMENT_HEADER = 'falco-probes repository signature v1';

export interface SignatureFile {
  format: typeof SIGNATURE_FORMAT;
  algorithm: 'ed25519';
  /** sha256 of the public key (SPKI DER): which key signed, for the error message. */
  keyId: string;
  /** The exact bytes that were signed (UTF-8). */
  statement: string;
  /** base64 of the 64-byte ed25519 signature of `statement`. */
  signature: string;
}

/** The signed statement for these two files' bytes. */
export function signatureStatement(indexBytes: Uint8Array, sumsBytes: Uint8Array): string {
  return (
    `${STATEMENT_HEADER}\n` +
    `${INDEX_FILE} ${sha256Hex(indexBytes)} ${indexBytes.length}\n` +
    `${SUMS_FILE} ${sha256Hex(sumsBytes)} ${sumsBytes.length}\n`
  );
}

export function keyIdOf(publicKey: KeyObject): string {
  return sha256Hex(publicKey.export({ type: 'spki', format: 'der' }));
}

function requireEd25519(key: KeyObject, file: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519')
    throw new FalcoProbesError('config', `not an ed25519 key (found ${key.asymmetricKeyType ?? 'a symmetric key'})`, {
      location: { file },
      hint: 'make a key pair with: falco-probes keygen --out PREFIX',
    });
  return key;
}

async function readKeyFile(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FalcoProbesError('usage', code === 'ENOENT' ? `${what} not found` : `cannot read the ${what}: ${(err as Error).message}`, {
      location: { file },
    });
  }
}

export async function loadPrivateKey(file: string): Promise<{ key: KeyObject; groupOrWorldReadable: boolean }> {
  const pem = await readKeyFile(file, 'signing key');
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new FalcoProbesError('config', `not a PEM private key: ${(err as Error).message}`, {
      location: { file },
      hint: 'expected PREFIX.key as written by falco-probes keygen',
    });
  }
  const mode = (await stat(file)).mode;
  return { key: requireEd25519(key, file), groupOrWorldReadable: (mode & 0o077) !== 0 };
}

export async function loadPublicKey(file: string): Promise<KeyObject> {
  const pem = await readKeyFile(file, 'public key');
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new FalcoProbesError('config', `not a PEM public key: ${(err as Error).message}`, {
      location: { file },
      hint: 'expected PREFIX.pub as written by falco-probes keygen',
    });
  }
  if (key.type !== 'public')
    throw new FalcoProbesError('usage', 'this is a private key; verify takes the public one (PREFIX.pub)', { location: { file } });
  return requireEd25519(key, file);
}

/** Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM). Refuses to replace either. */
export async function generateKeyFiles(prefix: string): Promise<{ privateFile: string; publicFile: string; keyId: string }> {
  const privateFile = `${prefix}.key`;
  const publicFile = `${prefix}.pub`;
  for (const f of [privateFile, publicFile])
    if (await pathExists(f))
      throw new FalcoProbesError('usage', 'already exists; refusing to replace a key', {
        location: { file: f },
        hint: 'choose another --out prefix, or remove the old pair first',
      });
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  await writeFileAtomic(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  await writeFileAtomic(publicFile, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  return { privateFile, publicFile, keyId: keyIdOf(publicKey) };
}

/** The text of index.json.sig for these bytes. */
export function signRepository(privateKey: KeyObject, indexBytes: Uint8Array, sumsBytes: Uint8Array): string {
  const statement = signatureStatement(indexBytes, sumsBytes);
  const body: SignatureFile = {
    format: SIGNATURE_FORMAT,
    algorithm: 'ed25519',
    keyId: keyIdOf(createPublicKey(privateKey)),
    statement,
    signature: sign(null, Buffer.from(statement, 'utf8'), privateKey).toString('base64'),
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}

export function parseSignatureFile(text: string, where: string): SignatureFile {
  const location = /^[a-z]+:\/\//.test(where) ? { url: where } : { file: where };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FalcoProbesError('config', `malformed signature file: ${(err as Error).message}`, { location });
  }
  const v = value as Partial<SignatureFile>;
  const ok =
    typeof v === 'object' &&
    v !== null &&
    v.format === SIGNATURE_FORMAT &&
    v.algorithm === 'ed25519' &&
    typeof v.keyId === 'string' &&
    /^[0-9a-f]{64}$/.test(v.keyId) &&
    typeof v.statement === 'string' &&
    v.statement.length < 4096 &&
    typeof v.signature === 'string' &&
    /^[A-Za-z0-9+/]{86}==$/.test(v.signature);
  if (!ok)
    throw new FalcoProbesError(
      'config',
      `malformed signature file: expected ${SIGNATURE_FORMAT} with keyId, statement and a base64 ed25519 signature`,
      { location },
    );
  return v as SignatureFile;
}

/**
 * Check a signature file against the bytes of index.json and SHA256SUMS and a
 * public key. Throws a 'checksum' error that says which part failed.
 */
export function verifyRepositorySignature(
  sig: SignatureFile,
  publicKey: KeyObject,
  indexBytes: Uint8Array,
  sumsBytes: Uint8Array,
  where: string,
): void {
  const location = /^[a-z]+:\/\//.test(where) ? { url: where } : { file: where };
  const expected = signatureStatement(indexBytes, sumsBytes);
  const signatureOk = verify(null, Buffer.from(sig.statement, 'utf8'), publicKey, Buffer.from(sig.signature, 'base64'));
  const wantedId = keyIdOf(publicKey);
  if (!signatureOk) {
    if (sig.keyId !== wantedId)
      throw new FalcoProbesError(
        'checksum',
        `signed by another key (key id ${sig.keyId.slice(0, 16)}), not by the public key given (key id ${wantedId.slice(0, 16)})`,
        {
          location,
          hint: 'check --public-key; a repository signed by an unknown key must not be trusted',
        },
      );
    throw new FalcoProbesError('checksum', 'the signature does not verify with the public key given: the signature file was altered', {
      location,
    });
  }
  if (sig.statement !== expected) {
    const mismatch = diffStatement(sig.statement, expected);
    throw new FalcoProbesError('checksum', `${mismatch} changed after it was signed`, {
      location,
      details: `  signed:  ${sig.statement.trimEnd().split('\n').slice(1).join(' | ')}\n  found:   ${expected.trimEnd().split('\n').slice(1).join(' | ')}`,
      hint: 'the repository was modified without its signing key, or a publish is in progress (retry in a moment)',
    });
  }
}

function diffStatement(signed: string, found: string): string {
  const a = signed.split('\n');
  const b = found.split('\n');
  const names: string[] = [];
  for (let i = 1; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i] && (b[i] ?? '').length) names.push(b[i]!.split(' ')[0]!);
  return names.length ? names.join(' and ') : 'the signed statement';
}
