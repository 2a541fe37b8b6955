import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bypassesProxy, httpGetBuffer, proxyFor } from '../src/util/http.js';
import { FalcoProbesError } from '../src/util/errors.js';
import { runCli } from './helpers/cli.js';
import { startMirror, type TestMirror } from './helpers/server.js';
import { debianLikeDefinition, debianLikeSuites, writeAptSuite } from './helpers/apt-fixture.js';

// HTTP_PROXY, HTTPS_PROXY and NO_PROXY, against a small proxy on 127.0.0.1
// that serves absolute-URI GETs by asking the loopback mirror (whatever host
// the URI names: the mirrors below are named *.invalid, which no resolver
// answers, so only a request through the proxy can reach them) and refuses
// every CONNECT, recording what it was asked.

interface TestProxy {
  url: string;
  gets: string[];
  connects: string[];
  close(): Promise<void>;
}

async function startProxy(): Promise<TestProxy> {
  const gets: string[] = [];
  const connects: string[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const target = req.url ?? '';
    gets.push(`${target} auth=${req.headers['proxy-authorization'] ?? '-'}`);
    if (!/^http:\/\//.test(target)) {
      res.writeHead(400).end('not an absolute URI\n');
      return;
    }
    const u = new URL(target);
    const upstream = http.get({ host: '127.0.0.1', port: u.port, path: `${u.pathname}${u.search}`, headers: { host: u.host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.writeHead(502).end());
  });
  server.on('connect', (req: http.IncomingMessage, socket: Socket) => {
    connects.push(req.url ?? '');
    socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    gets,
    connects,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('which requests go through a proxy', () => {
  const u = (s: string) => new URL(s);
  test('HTTP_PROXY for http://, HTTPS_PROXY (else HTTP_PROXY) for https://, lower case first', () => {
    assert.equal(proxyFor(u('http://a.example/x'), {}), undefined);
    assert.equal(proxyFor(u('http://a.example/x'), { HTTP_PROXY: 'http://p:3128' })?.host, 'p:3128');
    assert.equal(proxyFor(u('http://a.example/x'), { HTTP_PROXY: 'http://p:3128', http_proxy: 'http://q:8080' })?.host, 'q:8080');
    assert.equal(proxyFor(u('https://a.example/x'), { HTTP_PROXY: 'http://p:3128' })?.host, 'p:3128');
    assert.equal(proxyFor(u('https://a.example/x'), { HTTP_PROXY: 'http://p:3128', HTTPS_PROXY: 's:3129' })?.href, 'http://s:3129/');
    assert.equal(proxyFor(u('http://a.example/x'), { HTTPS_PROXY: 'http://s:3129' }), undefined);
    assert.equal(proxyFor(u('file:///x'), { HTTP_PROXY: 'http://p:3128' }), undefined);
    assert.equal(proxyFor(u('http://a.example/x'), { HTTP_PROXY: '  ' }), undefined);
    assert.equal(proxyFor(u('http://a.example/x'), { http_proxy: '', HTTP_PROXY: 'http://p:3128' })?.host, 'p:3128');
    for (const loopback of ['http://127.0.0.1:8080/x', 'http://localhost/x', 'http://[::1]/x', 'https://127.1.2.3/x'])
      assert.equal(proxyFor(u(loopback), { HTTP_PROXY: 'http://p:3128' }), undefined, loopback);
    assert.throws(
      () => proxyFor(u('http://a.example/x'), { HTTP_PROXY: 'socks5://p:1080' }),
      (e: unknown) => e instanceof FalcoProbesError && /not an http:\/\/ URL/.test(e.message),
    );
  });

  test('NO_PROXY: *, hosts, domains with their subdomains, ports', () => {
    const by = (url: string, list: string) => bypassesProxy(u(url), list);
    assert.equal(by('http://a.example/', '*'), true);
    assert.equal(by('http://a.example/', 'a.example'), true);
    assert.equal(by('http://deb.a.example/', 'a.example'), true);
    assert.equal(by('http://deb.a.example/', '.a.example'), true);
    assert.equal(by('http://deb.a.example/', '*.a.example'), true);
    assert.equal(by('http://xa.example/', 'a.example'), false);
    assert.equal(by('http://127.0.0.1:8080/', 'localhost, 127.0.0.1'), true);
    assert.equal(by('http://127.0.0.1:8080/', '127.0.0.1:8080'), true);
    assert.equal(by('http://127.0.0.1:8080/', '127.0.0.1:9090'), false);
    assert.equal(by('https://A.Example/', 'a.example:443'), true);
    assert.equal(by('http://[::1]:80/', '[::1]'), true);
    assert.equal(by('http://a.example/', ''), false);
    assert.equal(proxyFor(u('http://deb.a.example/x'), { HTTP_PROXY: 'http://p:3128', no_proxy: 'a.example' }), undefined);
    assert.equal(proxyFor(u('http://deb.b.example/x'), { HTTP_PROXY: 'http://p:3128', NO_PROXY: 'a.example' })?.host, 'p:3128');
  });
});

describe('requests through a loopback proxy', () => {
  let proxy: TestProxy;
  let mirror: TestMirror;
  let dir: string;
  const saved = { ...process.env };
  const setEnv = (env: Record<string, string | undefined>) => {
    for (const name of ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy']) delete process.env[name];
    for (const [k, v] of Object.entries(env)) if (v !== undefined) process.env[k] = v;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'falco-probes-proxy-'));
    const [bookworm, security] = debianLikeSuites();
    await writeAptSuite(join(dir, 'mirror', 'bookworm'), bookworm!);
    await writeAptSuite(join(dir, 'mirror', 'bookworm-security'), security!);
    mirror = await startMirror({ root: join(dir, 'mirror'), files: { 'hello.txt': 'hello through the proxy\n' } });
    proxy = await startProxy();
    await mkdir(join(dir, 'project', 'kernels'), { recursive: true });
    await writeFile(join(dir, 'project', 'kernels', 'debian12.yaml'), debianLikeDefinition());
  });
  after(async () => {
    setEnv(saved);
    await proxy.close();
    await mirror.close();
    await rm(dir, { recursive: true, force: true });
  });

  const port = () => new URL(mirror.url).port;

  test('a download through HTTP_PROXY (absolute URI, Basic proxy credentials); NO_PROXY goes direct', async () => {
    setEnv({ HTTP_PROXY: proxy.url.replace('http://', 'http://bot:s%40cret@') });
    const body = await httpGetBuffer(`http://mirror.invalid:${port()}/hello.txt`, { attempts: 1 });
    assert.equal(body.toString(), 'hello through the proxy\n');
    assert.deepEqual(proxy.gets, [`http://mirror.invalid:${port()}/hello.txt auth=Basic ${Buffer.from('bot:s@cret').toString('base64')}`]);

    // A host that NO_PROXY names is asked directly: no resolver knows mirror.invalid.
    setEnv({ http_proxy: proxy.url, no_proxy: 'localhost, .invalid' });
    await assert.rejects(httpGetBuffer(`http://mirror.invalid:${port()}/hello.txt`, { attempts: 1 }), (e: unknown) => {
      assert.ok(e instanceof FalcoProbesError && e.kind === 'network' && !/through the proxy/.test(e.message), String(e));
      return true;
    });
    assert.equal(proxy.gets.length, 1, 'NO_PROXY: not through the proxy');

    // Loopback addresses are always direct, proxy or not (the tests' own mirrors among them).
    const seen = mirror.requests.length;
    setEnv({ HTTP_PROXY: proxy.url });
    assert.equal((await httpGetBuffer(`${mirror.url}/hello.txt`, { attempts: 1 })).toString(), 'hello through the proxy\n');
    assert.equal(proxy.gets.length, 1);
    assert.equal(mirror.requests.length, seen + 1);
  });

  test('an https:// URL asks the proxy for a CONNECT tunnel to its host and port; a refusal is a network error', async () => {
    setEnv({ HTTPS_PROXY: proxy.url });
    await assert.rejects(httpGetBuffer('https://mirror.invalid/debian/dists/bookworm/InRelease', { attempts: 1 }), (e: unknown) => {
      assert.ok(e instanceof FalcoProbesError && e.kind === 'network', String(e));
      assert.match(e.message, /the proxy http:\/\/127\.0\.0\.1:\d+\/ refused a tunnel to mirror\.invalid:443: HTTP 403/);
      return true;
    });
    assert.deepEqual(proxy.connects, ['mirror.invalid:443']);
  });

  test('resolve --json through HTTP_PROXY reads mirrors that only the proxy can reach; with NO_PROXY it fails', async () => {
    const mirrors = [
      '--mirror',
      `bookworm=http://deb.invalid:${port()}/bookworm`,
      '--mirror',
      `bookworm-security=http://deb.invalid:${port()}/bookworm-security`,
    ];
    proxy.gets.length = 0;
    const env = { HTTP_PROXY: proxy.url, HTTPS_PROXY: '', NO_PROXY: '', http_proxy: '', https_proxy: '', no_proxy: '' };
    const r = await runCli(['resolve', '--check', '--json', 'debian12', ...mirrors], { cwd: join(dir, 'project'), env, timeoutMs: 60_000 });
    assert.equal(r.code, 1, r.stderr); // stale: there is no lockfile yet
    const report = JSON.parse(r.stdout) as { check: boolean; stale: number; oses: { os: string; added: { name: string }[] }[] };
    assert.equal(report.stale, 1);
    assert.equal(report.oses[0]!.os, 'debian12');
    assert.equal(report.oses[0]!.added.length, 12);
    assert.ok(
      proxy.gets.some((g) => g.startsWith(`http://deb.invalid:${port()}/bookworm/dists/bookworm/InRelease`)),
      proxy.gets.join('\n'),
    );

    const direct = await runCli(['resolve', '--check', 'debian12', '--timeout', '5', ...mirrors], {
      cwd: join(dir, 'project'),
      env: { ...env, NO_PROXY: 'invalid' },
      timeoutMs: 60_000,
    });
    assert.notEqual(direct.code, 0);
    assert.match(direct.stderr, /deb\.invalid/);
    assert.doesNotMatch(direct.stderr, /through the proxy/);
  });
});
