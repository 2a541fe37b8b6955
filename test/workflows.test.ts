import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { commandLoaders } from '../src/cli/commands/index.js';
import { PROJECT_ROOT } from './helpers/cli.js';

// The GitHub workflows parse as YAML, have the shape Actions needs, and name
// only commands of this tool and scripts of this repository that exist.
// (Whether GitHub runs them as intended is checked on GitHub, not here.)

const DIR = join(PROJECT_ROOT, '.github', 'workflows');

interface Step {
  uses?: string;
  run?: string;
  [k: string]: unknown;
}
interface Job {
  'runs-on': string;
  container?: { image: string };
  steps: Step[];
  [k: string]: unknown;
}
interface Workflow {
  name: string;
  on: Record<string, unknown>;
  jobs: Record<string, Job>;
  permissions?: Record<string, string>;
}

const workflows = new Map<string, Workflow>();
for (const file of (await readdir(DIR)).filter((f) => /\.ya?ml$/.test(f)).sort())
  workflows.set(file, parse(await readFile(join(DIR, file), 'utf8'), { strict: true, uniqueKeys: true }) as Workflow);

const runs = (w: Workflow) => Object.values(w.jobs).flatMap((j) => j.steps.flatMap((s) => (typeof s.run === 'string' ? [s.run] : [])));

test('every workflow parses and every job has runs-on and steps', () => {
  assert.ok(workflows.size >= 4, [...workflows.keys()].join(', '));
  for (const [file, w] of workflows) {
    assert.equal(typeof w.name, 'string', file);
    assert.ok(w.on && typeof w.on === 'object', `${file}: on`);
    for (const [name, job] of Object.entries(w.jobs)) {
      assert.equal(typeof job['runs-on'], 'string', `${file} ${name}: runs-on`);
      assert.ok(Array.isArray(job.steps) && job.steps.length > 0, `${file} ${name}: steps`);
      for (const s of job.steps)
        assert.ok((typeof s.uses === 'string') !== (typeof s.run === 'string'), `${file} ${name}: a step has uses or run`);
    }
  }
});

test('the commands and scripts the workflows run exist', () => {
  for (const [file, w] of workflows) {
    for (const script of runs(w)) {
      for (const m of script.matchAll(/npx falco-probes ([a-z-]+)/g))
        assert.ok(commandLoaders[m[1]!], `${file}: falco-probes ${m[1]} is not a command`);
      for (const m of script.matchAll(/\b(scripts\/[\w.-]+)/g))
        assert.ok(existsSync(join(PROJECT_ROOT, m[1]!)), `${file}: ${m[1]} does not exist`);
    }
  }
});

test('resolve runs in debian:bookworm; PRs get resolve --check, generate --check, a targets table and a build of the changed targets', () => {
  const nightly = workflows.get('resolve-nightly.yml')!;
  assert.equal(nightly.jobs['resolve']!.container?.image, 'debian:bookworm');
  assert.match(runs(nightly).join('\n'), /debian-archive-keyring/);
  assert.match(JSON.stringify(nightly), /secrets\.PROBES_PR_TOKEN/);

  const pr = workflows.get('pull-request.yml')!;
  assert.ok('pull_request' in pr.on);
  assert.equal(pr.jobs['resolve-check']!.container?.image, 'debian:bookworm');
  const all = runs(pr).join('\n');
  assert.match(all, /npx falco-probes resolve --check/);
  assert.match(all, /npx falco-probes generate --check/);
  assert.match(all, /npx falco-probes diff-targets .* --format markdown/);
  assert.match(all, /npx falco-probes diff-targets .* --format labels/);
  assert.match(all, /gh pr comment/);
  assert.match(all, /npx falco-probes build "\$\{labels\[@\]\}"/);
  assert.equal(pr.permissions?.['pull-requests'], 'write');
});

test('publishing goes to a bucket; no workflow pushes probes to a Pages branch', () => {
  const publish = workflows.get('build-publish.yml')!;
  const all = runs(publish).join('\n');
  assert.match(all, /aws s3 sync .*published\/ "\$PROBES_BUCKET"/);
  assert.doesNotMatch(all, /--delete/);
  // The index is uploaded after the probes.
  assert.ok(all.indexOf('aws s3 cp') > all.indexOf('aws s3 sync --only-show-errors --size-only published/'));
  for (const [file, w] of workflows) assert.doesNotMatch(runs(w).join('\n'), /git push origin "HEAD:\$\{?PAGES/, file);
});
