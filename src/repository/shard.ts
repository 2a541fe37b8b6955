import { FalcoProbesError } from '../util/errors.js';
import { SHA256_RE } from '../util/names.js';

// Deterministic sharding of targets across CI machines. A target's shard is a
// function of its key and the shard count only (not of which other targets are
// out of date, not of their order), so `plan` on one machine and
// `build --shard i/N` on another always agree, and every target falls in
// exactly one shard. Keys are sha256 digests, hence uniform: the first 48 bits
// modulo N balance the shards to within statistical noise.

/** A shard as written on the command line: `3/8` is the third of eight (1-based). */
export interface Shard {
  index: number;
  count: number;
}

/** More shards than this is a typo, not a CI matrix (GitHub Actions allows 256 jobs per matrix). */
export const MAX_SHARDS = 256;

const SHARD_RE = /^(\d{1,4})\/(\d{1,4})$/;

/** Parse `i/N` (1 <= i <= N <= 256); anything else is a usage error naming the flag. */
export function parseShard(text: string, flag = '--shard'): Shard {
  const m = SHARD_RE.exec(text.trim());
  if (!m) throw new FalcoProbesError('usage', `${flag} expects i/N (for example 3/8), got ${JSON.stringify(text)}`);
  const index = Number(m[1]);
  const count = parseShardCount(m[2]!, flag);
  if (index < 1 || index > count) throw new FalcoProbesError('usage', `${flag} ${text}: the shard number must be between 1 and ${count}`);
  return { index, count };
}

/** Parse a shard count (`--shards N`): a whole number from 1 to MAX_SHARDS. */
export function parseShardCount(text: unknown, flag = '--shards'): number {
  const s = String(text).trim();
  const n = /^\d{1,4}$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_SHARDS)
    throw new FalcoProbesError('usage', `${flag} expects a whole number from 1 to ${MAX_SHARDS}, got ${JSON.stringify(text)}`);
  return n;
}

export function formatShard(shard: Shard): string {
  return `${shard.index}/${shard.count}`;
}

/** The 1-based shard of a target key among `count` shards. */
export function shardOf(key: string, count: number): number {
  if (!SHA256_RE.test(key)) throw new FalcoProbesError('internal', `shardOf: not a target key: ${JSON.stringify(key)}`);
  if (!Number.isInteger(count) || count < 1) throw new FalcoProbesError('internal', `shardOf: bad shard count ${count}`);
  // 12 hex digits = 48 bits: exact in a double, and plenty for count <= 256.
  return (parseInt(key.slice(0, 12), 16) % count) + 1;
}

export function inShard(key: string, shard: Shard): boolean {
  return shardOf(key, shard.count) === shard.index;
}

/** Split items into `count` shards by key; shard i is at [i - 1]. Each keeps the input order. */
export function splitByShard<T>(items: readonly T[], keyOf: (item: T) => string, count: number): T[][] {
  const shards: T[][] = Array.from({ length: count }, () => []);
  for (const item of items) shards[shardOf(keyOf(item), count) - 1]!.push(item);
  return shards;
}
