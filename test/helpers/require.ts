import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { PROJECT_ROOT } from './cli.js';

// When a test may skip for something this machine lacks, and when that is a
// failure instead (README, "Tests").
//
// A test skips, saying why, when it needs what is not here: a tool, the Docker
// daemon, real Debian packages (fetching them needs root), ../shared/falco-libs.
// With FALCO_PROBES_REQUIRE_ALL=1, which scripts/test.sh sets when it runs as
// root (it has just installed every tool and started the daemon), such a skip
// is a failure: a broken setup must not pass as a skipped test.
//
// ../shared/falco-libs is not part of this repository, so a checkout without
// it still tests (those tests skip, saying so). Where the folder exists it is
// used and the rule above applies; FALCO_PROBES_REQUIRE_FALCO_LIBS=1 (.ci/run:
// CI has the folder) makes its absence a failure too.

export const REQUIRE_ALL = process.env['FALCO_PROBES_REQUIRE_ALL'] === '1';

/** Copies of falcosecurity/libs' tag archives, beside this checkout (CI has them). */
export const FALCO_LIBS = join(PROJECT_ROOT, '..', 'shared', 'falco-libs');

/** Skip with `reason`, or fail when FALCO_PROBES_REQUIRE_ALL=1 says this machine has everything. */
export function skipOrFail(t: TestContext, reason: string): void {
  if (REQUIRE_ALL)
    assert.fail(`${reason}\n(FALCO_PROBES_REQUIRE_ALL=1: scripts/test.sh installed what the tests need, so this is a failure, not a skip)`);
  t.skip(reason);
}

/**
 * Whether ../shared/falco-libs holds `files`. Otherwise the test is skipped
 * when the folder is absent, and skipped or failed (skipOrFail) when the folder
 * is there without them; FALCO_PROBES_REQUIRE_FALCO_LIBS=1 fails either way.
 */
export function haveFalcoLibs(t: TestContext, files: string[]): boolean {
  const required = process.env['FALCO_PROBES_REQUIRE_FALCO_LIBS'] === '1';
  if (!existsSync(FALCO_LIBS)) {
    const reason = `${FALCO_LIBS} is not here (copies of falcosecurity/libs' tag archives; CI has them, GitHub is not reachable from tests)`;
    if (required) assert.fail(`${reason}\n(FALCO_PROBES_REQUIRE_FALCO_LIBS=1: this machine must have it)`);
    t.skip(reason);
    return false;
  }
  const missing = files.filter((f) => !existsSync(join(FALCO_LIBS, f)));
  if (missing.length === 0) return true;
  const reason = `${FALCO_LIBS} has no ${missing.join(', ')}`;
  if (required) assert.fail(reason);
  skipOrFail(t, reason);
  return false;
}
