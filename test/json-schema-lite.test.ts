import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { compile, isValid, UnsupportedSchema } from '../src/util/json-schema-lite.js';
import { lockfileSchema } from '../src/lockfile/schema.js';
import { driversSchema } from '../src/config/schema/drivers.js';
import { indexSchema } from '../src/repository/index-file.js';

// The small validator that answers "valid?" before ajv is loaded
// (src/util/json-schema-lite.ts) must never say yes where ajv says no. Each
// real schema it stands in for is checked here against ajv on valid values
// and on values each broken in one way.

const ajv = new Ajv({ allErrors: false, strict: true, strictRequired: false, allowUnionTypes: true });

function agree(schema: object, value: unknown, what: string): void {
  const expected = ajv.validate(schema, value);
  assert.equal(isValid(schema, value), expected, `${what}: ajv says ${expected}`);
}

const pkg = {
  name: 'linux-headers-6.1.0-50-amd64',
  version: '6.1.176-1',
  role: 'headers',
  repository: 'bookworm',
  path: 'pool/main/l/linux/x.deb',
  sha256: 'a'.repeat(64),
  size: 10,
};
const kernel = {
  name: '6.1.0-50-amd64',
  release: '6.1.0-50-amd64',
  version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1',
  machine: 'x86_64',
  kernelVersion: '1',
  targetId: 'debian',
  flavour: 'amd64',
  packages: [pkg],
};
const lock = {
  os: 'debian12',
  source: { path: 'kernels/debian12.yaml', sha256: 'b'.repeat(64) },
  osRelease: { ID: 'debian', VERSION_ID: '12' },
  kernels: [kernel],
};

/** Every value with one thing changed: a field removed, an extra field, a wrong type, a value that breaks a pattern. */
function variants(base: Record<string, unknown>, path: string[] = []): { what: string; value: unknown }[] {
  const out: { what: string; value: unknown }[] = [];
  const set = (root: unknown, p: string[], v: unknown): unknown => {
    if (p.length === 0) return v;
    const [head, ...rest] = p;
    if (Array.isArray(root)) return root.map((x, i) => (String(i) === head ? set(x, rest, v) : x));
    const o = { ...(root as Record<string, unknown>) };
    if (v === undefined && rest.length === 0) delete o[head!];
    else o[head!] = set(o[head!], rest, v);
    return o;
  };
  const walk = (node: unknown, p: string[]) => {
    if (node === null || typeof node !== 'object') {
      const where = p.join('.');
      out.push({ what: `${where} = 7`, value: set(base, p, 7) });
      out.push({
        what: `${where} = "bad value with spaces; and \\"quotes\\""`,
        value: set(base, p, 'bad value with spaces; and "quotes"'),
      });
      out.push({ what: `${where} = ""`, value: set(base, p, '') });
      out.push({ what: `${where} = -1`, value: set(base, p, -1) });
      out.push({ what: `${where} = 1.5`, value: set(base, p, 1.5) });
      return;
    }
    if (Array.isArray(node)) {
      out.push({ what: `${p.join('.')} = []`, value: set(base, p, []) });
      out.push({ what: `${p.join('.')} twice`, value: set(base, p, [...node, ...node]) });
      for (const [i, x] of node.entries()) walk(x, [...p, String(i)]);
      return;
    }
    out.push({ what: `${p.join('.')}.extra`, value: set(base, [...p, 'extra'], 'x') });
    out.push({ what: `${p.join('.')} = null`, value: set(base, p, null) });
    for (const k of Object.keys(node)) {
      out.push({ what: `${[...p, k].join('.')} removed`, value: set(base, [...p, k], undefined) });
      walk((node as Record<string, unknown>)[k], [...p, k]);
    }
  };
  walk(base, path);
  return out;
}

test('lockfile schema: the same answer as ajv on a valid lockfile and on every one-field breakage', () => {
  agree(lockfileSchema, lock, 'valid');
  const vs = variants(lock);
  assert.ok(vs.length > 100, `${vs.length} variants`);
  for (const v of vs) agree(lockfileSchema, v.value, v.what);
});

test('drivers schema (oneOf sources, enums, uniqueItems): the same answer as ajv', () => {
  const drivers = {
    builder: { kind: 'host', clang: '14.0.6', gcc: 'gcc (Debian 12.2.0-14+deb12u1) 12.2.0' },
    compilerImages: [
      { release: 'trixie', image: `sha256:${'c'.repeat(64)}`, clang: 'Debian clang version 19.1.7', gcc: 'gcc (Debian 14.2.0-19) 14.2.0' },
    ],
    drivers: [
      {
        name: 'example',
        version: '1.0.0',
        source: { path: 'examples/probe' },
        recipe: 'kbuild',
        bpfDir: '.',
        object: 'probe.o',
        kinds: ['bpf'],
        kernels: { min: '4.14' },
      },
      {
        name: 'falco',
        version: '9.1.0+driver',
        source: { url: 'https://example.invalid/libs.tar.gz', tree: 'd'.repeat(64), strip: 1 },
        recipe: 'falco-libs',
        bpfDir: 'driver/bpf',
        object: 'probe.o',
        kmodDir: 'driver',
        module: 'falco.ko',
        kinds: ['bpf', 'kmod'],
      },
      {
        name: 'scap',
        version: '0.23.2',
        source: {
          deb: {
            archive: 'debian',
            aptPath: '/debian',
            name: 'falcosecurity-scap-dkms',
            version: '0.23.2-6',
            path: 'pool/main/f/x.deb',
            sha256: 'e'.repeat(64),
            size: 5,
          },
          dir: 'usr/src/scap-0.23.2',
        },
        recipe: 'kbuild',
        kmodDir: '.',
        module: 'scap.ko',
        kinds: ['kmod'],
      },
    ],
  };
  agree(driversSchema, drivers, 'valid');
  for (const v of variants(drivers)) agree(driversSchema, v.value, v.what);
  // Both tarball pins at once still match exactly one oneOf branch (drivers.ts refuses it by rule); kinds twice does not.
  agree(driversSchema, { ...drivers, drivers: [{ ...drivers.drivers[0]!, kinds: ['bpf', 'bpf'] }] }, 'kinds twice');
});

test('repository index schema: the same answer as ajv', () => {
  const entry = {
    file: '1.0.0/x86_64/x.o',
    key: 'a'.repeat(64),
    sha256: 'b'.repeat(64),
    size: 3,
    os: 'debian12',
    kernel: 'k',
    driver: 'falco',
    driverVersion: '1.0.0',
    arch: 'x86_64',
    kind: 'bpf',
    load: { verdict: 'loaded', kernelImageSha256: 'c'.repeat(64), message: 'ok' },
  };
  const index = { version: 1, probes: [entry] };
  agree(indexSchema, index, 'valid');
  for (const v of variants(index)) agree(indexSchema, v.value, v.what);
});

test('a keyword it does not implement is refused, so that ajv decides', () => {
  assert.throws(() => compile({ type: 'object', if: { required: ['a'] }, then: { required: ['b'] } }), UnsupportedSchema);
  assert.throws(() => compile({ type: 'string', format: 'uri' }), UnsupportedSchema);
  assert.throws(() => compile({ enum: [{ a: 1 }] }), UnsupportedSchema);
});
