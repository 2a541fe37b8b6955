import { builderLabel } from '../graph/compiler-choice.js';
import { probeLabels } from './build-file.js';
import type { Target } from '../graph/types.js';
import { jsonString } from '../util/hash.js';
import type { ByteWriter } from '../util/byte-writer.js';

// generated/targets.json: every target with its key, one per line (so a
// lockfile change shows as a few changed lines in review), in target order.

export const TARGETS_JSON_VERSION = 1;

export interface TargetRecord {
  label: string;
  name: string;
  key: string;
  os: string;
  kernel: string;
  release: string;
  driver: string;
  driverVersion: string;
  kind: string;
  arch: string;
  /** Repository-relative probe path: <driver version>/<arch>/<probe file>. */
  output: string;
  /** What builds it: `host`, `docker`, or `docker:<release>` for a compiler image (graph/compiler-choice.ts). */
  builder: string;
  labels: string[];
}

export function targetRecord(t: Target): TargetRecord {
  return {
    label: t.label,
    name: t.name,
    key: t.key,
    os: t.os,
    kernel: t.kernel.name,
    release: t.kernel.release,
    driver: t.driver.name,
    driverVersion: t.driver.version,
    kind: t.kind,
    arch: t.arch,
    output: t.output,
    builder: builderLabel(t.builder),
    labels: probeLabels(t),
  };
}

const str = jsonString;

/** `JSON.stringify(targetRecord(t))`, written out; the parts shared by many targets are made once. */
function recordWriter(): (t: Target) => string {
  const shared = new Map<string, { os: string; driver: string; labels: string }>();
  return (t) => {
    const id = `${t.os}/${t.driver.name}/${t.driver.version}/${t.kind}/${t.arch}`;
    let s = shared.get(id);
    if (!s) {
      s = {
        os: `,"os":${str(t.os)}`,
        driver: `,"driver":${str(t.driver.name)},"driverVersion":${str(t.driver.version)},"kind":${str(t.kind)},"arch":${str(t.arch)}`,
        labels: `,"labels":${JSON.stringify(probeLabels(t))}}`,
      };
      shared.set(id, s);
    }
    return `{"label":${str(t.label)},"name":${str(t.name)},"key":${str(t.key)}${s.os},"kernel":${str(t.kernel.name)},"release":${str(t.kernel.release)}${s.driver},"output":${str(t.output)},"builder":${str(builderLabel(t.builder))}${s.labels}`;
  };
}

/** targets.json, written into `out`. */
export function writeTargetsJson(out: ByteWriter, targets: readonly Target[]): ByteWriter {
  if (targets.length === 0) return out.write(`{"version":${TARGETS_JSON_VERSION},"targets":[]}\n`);
  const record = recordWriter();
  out.write(`{"version":${TARGETS_JSON_VERSION},"targets":[\n`);
  targets.forEach((t, i) => {
    out.write(i === 0 ? record(t) : `,\n${record(t)}`);
  });
  return out.write('\n]}\n');
}
