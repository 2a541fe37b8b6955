import http from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import type { AddressInfo } from 'node:net';

// A loopback HTTP mirror for tests: serves files from a directory and/or an
// in-memory map, and can be told to misbehave per path (status codes, resets,
// stalls, truncated bodies). Listens on 127.0.0.1 only.

export type Fault =
  | { kind: 'status'; status: number; times?: number }
  | { kind: 'reset'; afterBytes?: number; times?: number }
  | { kind: 'stall'; times?: number }
  | { kind: 'truncate'; bytes: number; times?: number }
  | { kind: 'body'; body: string | Buffer; times?: number };

export interface TestMirror {
  url: string;
  /** Requests seen, as paths. */
  requests: string[];
  files: Map<string, Buffer>;
  faults: Map<string, Fault>;
  close(): Promise<void>;
}

export async function startMirror(opts: { root?: string; files?: Record<string, string | Buffer> } = {}): Promise<TestMirror> {
  const files = new Map<string, Buffer>(Object.entries(opts.files ?? {}).map(([k, v]) => [k.replace(/^\/+/, ''), Buffer.from(v)]));
  const faults = new Map<string, Fault>();
  const requests: string[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
    requests.push(path);
    const fault = faults.get(path);
    if (fault) {
      if (fault.times !== undefined) {
        fault.times--;
        if (fault.times <= 0) faults.delete(path);
      }
      if (fault.kind === 'status') {
        res.writeHead(fault.status, { 'content-type': 'text/plain' });
        res.end(`status ${fault.status}\n`);
        return;
      }
      if (fault.kind === 'stall') return; // never answer
      if (fault.kind === 'body') {
        res.writeHead(200, { 'content-length': Buffer.byteLength(fault.body) });
        res.end(fault.body);
        return;
      }
    }
    let body = files.get(path);
    if (!body && opts.root) {
      const full = normalize(join(opts.root, path));
      if (full.startsWith(normalize(opts.root))) {
        try {
          const st = await stat(full);
          if (st.isFile()) {
            if (fault?.kind === 'reset' || fault?.kind === 'truncate') {
              const { readFile } = await import('node:fs/promises');
              body = await readFile(full);
            } else {
              res.writeHead(200, { 'content-length': st.size });
              createReadStream(full).pipe(res);
              return;
            }
          }
        } catch {
          /* fall through to 404 */
        }
      }
    }
    if (!body) {
      res.writeHead(404);
      res.end('not found\n');
      return;
    }
    if (fault?.kind === 'reset') {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, fault.afterBytes ?? Math.floor(body.length / 2)), () => req.socket.destroy());
      return;
    }
    if (fault?.kind === 'truncate') {
      res.writeHead(200, { 'content-length': fault.bytes });
      res.end(body.subarray(0, fault.bytes));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    files,
    faults,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port nobody listens on (a server started on port 0, then closed). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
