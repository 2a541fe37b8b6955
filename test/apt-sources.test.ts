import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withTempDir } from './helpers/cli.js';
import { APT_ETC_ENV, aptEtcDir, aptMirrorsForPath, readAptSources } from '../src/fetch/apt-sources.js';

// apt's sources as this machine's apt reads them, from real files in a
// temporary etc/apt: the one-line format, deb822, comments, disabled
// entries, bracketed options; the mirrors of one URI path, in file order.

async function etcWith(dir: string, files: Record<string, string>): Promise<string> {
  const etc = join(dir, 'etc', 'apt');
  await mkdir(join(etc, 'sources.list.d'), { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(join(etc, name), text);
  return etc;
}

test('one-line and deb822 sources: comments, options, deb-src and disabled entries; mirrors of a path in file order, deduplicated', async () => {
  await withTempDir(async (dir) => {
    const etc = await etcWith(dir, {
      'sources.list': [
        '# the main archive',
        'deb http://one.test/debian bookworm main contrib   # a trailing comment',
        'deb-src http://src-only.test/debian bookworm main',
        '#deb http://commented.test/debian bookworm main',
        'deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://two.test/debian/ bookworm-updates main',
        'deb [ arch=amd64 ] http://security.test/debian-security bookworm-security main',
        'deb cdrom:[Debian GNU/Linux 12]/ bookworm main',
        '',
      ].join('\n'),
      // Read after sources.list, by name: a.sources before b.list before z.sources.
      'sources.list.d/a.sources': [
        '# deb822, two stanzas and a disabled one',
        'Types: deb deb-src',
        'URIs: http://three.test/debian',
        '  http://one.test/debian/',
        'Suites: sid',
        'Components: main',
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg',
        '',
        'Types: deb',
        'URIs: http://disabled.test/debian',
        'Suites: sid',
        'Components: main',
        'Enabled: no',
        '',
        'types: deb',
        'uris: https://four.test/debian',
        'suites: trixie',
        'components: main',
      ].join('\n'),
      'sources.list.d/b.list': 'deb file:///srv/mirror/debian bookworm main\ndeb http://ubuntu.test/ubuntu jammy main\n',
      'sources.list.d/z.sources': 'Types: deb\nURIs: http://five.test/pub/debian\nSuites: bookworm\nComponents: main\n',
      'sources.list.d/ignored.list.save': 'deb http://saved.test/debian bookworm main\n',
      'sources.list.d/also.disabled-by-someone': 'deb http://off.test/debian bookworm main\n',
    });

    assert.deepEqual(await aptMirrorsForPath('/debian', { etcDir: etc }), [
      'http://one.test/debian',
      'http://two.test/debian',
      'http://three.test/debian',
      'https://four.test/debian',
    ]);
    // A file: URI's path is the folder's whole path.
    assert.deepEqual(await aptMirrorsForPath('/srv/mirror/debian', { etcDir: etc }), ['file:///srv/mirror/debian']);
    assert.deepEqual(
      await aptMirrorsForPath('/debian/', { etcDir: etc }),
      await aptMirrorsForPath('/debian', { etcDir: etc }),
      'a trailing slash does not count',
    );
    assert.deepEqual(await aptMirrorsForPath('/debian-security', { etcDir: etc }), ['http://security.test/debian-security']);
    assert.deepEqual(await aptMirrorsForPath('/pub/debian', { etcDir: etc }), ['http://five.test/pub/debian']);
    assert.deepEqual(await aptMirrorsForPath('/nowhere', { etcDir: etc }), []);

    const entries = await readAptSources({ etcDir: etc });
    const three = entries.filter((e) => e.uri === 'http://three.test/debian');
    assert.deepEqual(
      three.map((e) => e.type),
      ['deb', 'deb-src'],
    );
    assert.deepEqual(three[0]!.suites, ['sid']);
    assert.deepEqual(entries.find((e) => e.uri === 'http://one.test/debian')!.components, ['main', 'contrib']);
    assert.ok(!entries.some((e) => /disabled|commented|saved|off\.test/.test(e.uri)), 'disabled, commented and other files are not read');
  });
});

test('the folder comes from the option, else FALCO_PROBES_APT_ETC, else /etc/apt; a missing folder has no entries', async () => {
  await withTempDir(async (dir) => {
    const etc = await etcWith(dir, {
      'sources.list.d/debian.sources': 'Types: deb\nURIs: http://env.test/debian\nSuites: sid\nComponents: main\n',
    });
    assert.equal(aptEtcDir({ env: {} }), '/etc/apt');
    assert.equal(aptEtcDir({ env: { [APT_ETC_ENV]: etc } }), etc);
    assert.equal(aptEtcDir({ etcDir: '/x', env: { [APT_ETC_ENV]: etc } }), '/x');
    assert.deepEqual(await aptMirrorsForPath('/debian', { env: { [APT_ETC_ENV]: etc } }), ['http://env.test/debian']);
    assert.deepEqual(await aptMirrorsForPath('/debian', { etcDir: join(dir, 'no-such') }), []);
  });
});
