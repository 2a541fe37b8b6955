import { createHash } from 'node:crypto';
import { KMOD_PARTS, MARKERS, type KmodPart } from './initramfs.js';
import type { VmOutcome } from './qemu.js';

// From what the guest printed to a verdict. /init prints, in order:
//
//   FALCO-PROBES-INIT <uname -r>
//   FALCO-PROBES-RECORD-BEGIN
//   FALCO-PROBES-LOG-BEGIN
//   <eBPF: bpftool's output, the verifier log when a program is refused>
//   <legacy eBPF: the legacy loader's lines per map and program, the ends of refused programs' verifier logs, its summary>
//   <module: FALCO-PROBES-PART insmod|modules|devices|rmmod|dmesg, each followed by what it saw>
//   FALCO-PROBES-LOG-END
//   FALCO-PROBES-VERDICT {"bpftool_exit":N,"programs":N,"bpffs":0|1}
//     or FALCO-PROBES-VERDICT {"loader_exit":N,"programs":N,"refused":N}
//     or FALCO-PROBES-VERDICT {"insmod_exit":N,"listed":0|1,"devices":N,"rmmod_exit":N,"unloaded":0|1}
//   FALCO-PROBES-RECORD-END <bytes> <sha256>
//
// Everything between the begin line and the end line is the record: it counts
// only when its length and sha256 are those the end line gives. A console cut
// anywhere in it, or changed on the way, is no verdict: `unknown`, never
// `refused`. Before the record, kernel messages may come between lines (a
// panic, a warning), and the firmware's last words have no line end ("Booting
// from ROM..FALCO-PROBES-INIT 6.1.0-57-amd64"): the init marker is looked for
// anywhere in a line.

export type VerdictKind = 'loaded' | 'refused' | 'no-boot' | 'timeout' | 'unknown';

/** What the guest's verdict line says. */
export type GuestVerdict =
  | { kind: 'bpf'; bpftoolExit: number; programs: number; bpffs: boolean }
  /** The legacy loader's exit code (0 loaded, 1 refused by the kernel, 2 the object could not be read), programs loaded and refused. */
  | { kind: 'legacy'; loaderExit: number; programs: number; refused: number }
  | {
      kind: 'kmod';
      insmodExit: number;
      /** The module's line was in /proc/modules after insmod. */
      listed: boolean;
      /** Device nodes /dev/<driver>* found after insmod. */
      devices: number;
      /** -1: rmmod was not tried (the module was not loaded). */
      rmmodExit: number;
      /** The module's line was gone from /proc/modules after rmmod. */
      unloaded: boolean;
    };

/** Whether the console held the guest's whole record. */
export type RecordState =
  | { state: 'complete' }
  /** No begin line: the guest never got to say anything. */
  | { state: 'missing' }
  /** A begin line, then no end line, or an end line whose length or sha256 differs from the text before it, or no verdict in it. */
  | { state: 'damaged'; why: string };

export interface ConsoleReport {
  /** /init ran: the kernel booted. */
  initSeen: boolean;
  /** `uname -r` in the guest. */
  release?: string;
  record: RecordState;
  /** From a complete record only. */
  verdict?: GuestVerdict;
  /** Between LOG-BEGIN and LOG-END of a complete record: bpftool's output, or a module's parts with their marker lines. */
  log?: string;
  /** A kernel module's parts (what insmod, /proc/modules, /dev, rmmod and dmesg said). */
  parts?: Partial<Record<KmodPart, string>>;
  /** The kernel's panic line, if it panicked. */
  panic?: string;
}

const RECORD_END_RE = new RegExp(`^${MARKERS.recordEnd}\\s+(\\d+)\\s+([0-9a-f]{64})\\b`);

/** The record between the last begin line and the end line after it, checked against the end line's length and sha256. */
export function readRecord(console: string): { state: RecordState; text?: string } {
  const beginLine = `${MARKERS.recordBegin}\n`;
  let begin = console.lastIndexOf(beginLine);
  // The begin marker starts its line (the firmware's or the kernel's words may precede only /init's first line).
  while (begin > 0 && console[begin - 1] !== '\n') begin = console.lastIndexOf(beginLine, begin - 1);
  if (begin < 0) return { state: { state: 'missing' } };
  const start = begin + beginLine.length;
  let end = console.indexOf(`\n${MARKERS.recordEnd}`, start - 1);
  if (end < 0) return { state: { state: 'damaged', why: 'the console ends inside the record (no end line)' } };
  end += 1;
  const m = RECORD_END_RE.exec(console.slice(end, console.indexOf('\n', end) >= 0 ? console.indexOf('\n', end) : undefined));
  if (!m) return { state: { state: 'damaged', why: "the record's end line is cut or malformed" } };
  const text = console.slice(start, end);
  const bytes = Buffer.from(text, 'latin1');
  const length = Number(m[1]);
  if (bytes.length !== length)
    return { state: { state: 'damaged', why: `the record has ${bytes.length} bytes, its end line says ${length}` } };
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 !== m[2])
    return {
      state: { state: 'damaged', why: `the record's sha256 is ${sha256.slice(0, 12)}..., its end line says ${m[2]!.slice(0, 12)}...` },
    };
  return { state: { state: 'complete' }, text };
}

function parseVerdictLine(json: string): GuestVerdict | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const num = (k: string) => (typeof v[k] === 'number' ? (v[k] as number) : undefined);
  const bpftoolExit = num('bpftool_exit');
  const programs = num('programs');
  if (bpftoolExit !== undefined && programs !== undefined) return { kind: 'bpf', bpftoolExit, programs, bpffs: v['bpffs'] !== 0 };
  const loaderExit = num('loader_exit');
  const refused = num('refused');
  if (loaderExit !== undefined && programs !== undefined && refused !== undefined) return { kind: 'legacy', loaderExit, programs, refused };
  const insmodExit = num('insmod_exit');
  const rmmodExit = num('rmmod_exit');
  const devices = num('devices');
  if (insmodExit !== undefined && rmmodExit !== undefined && devices !== undefined)
    return { kind: 'kmod', insmodExit, listed: v['listed'] === 1, devices, rmmodExit, unloaded: v['unloaded'] === 1 };
  return undefined;
}

/** A module's log split at its part markers. */
function splitParts(log: string): Partial<Record<KmodPart, string>> {
  const parts: Partial<Record<KmodPart, string>> = {};
  let current: KmodPart | undefined;
  let lines: string[] = [];
  const flush = () => {
    if (current) parts[current] = lines.join('\n').trim();
  };
  for (const line of log.split('\n')) {
    const name = line.startsWith(`${MARKERS.part} `) ? line.slice(MARKERS.part.length + 1).trim() : undefined;
    if (name !== undefined && (KMOD_PARTS as readonly string[]).includes(name)) {
      flush();
      current = name as KmodPart;
      lines = [];
    } else lines.push(line);
  }
  flush();
  return parts;
}

export function readConsole(console: string): ConsoleReport {
  const report: ConsoleReport = { initSeen: false, record: { state: 'missing' } };
  for (const line of console.split('\n')) {
    const init = line.indexOf(MARKERS.init);
    if (init >= 0 && !report.initSeen) {
      report.initSeen = true;
      const release = line.slice(init + MARKERS.init.length).trim();
      if (release) report.release = release;
    }
    const panic = /Kernel panic - not syncing.*$/.exec(line);
    if (panic && !report.panic) report.panic = panic[0];
  }
  const record = readRecord(console);
  report.record = record.state;
  if (record.text === undefined) return report;
  const lines = record.text.split('\n');
  const logStart = lines.indexOf(MARKERS.logBegin);
  const logEnd = lines.lastIndexOf(MARKERS.logEnd);
  if (logStart >= 0 && logEnd > logStart)
    report.log = lines
      .slice(logStart + 1, logEnd)
      .join('\n')
      .trim();
  const verdictLine = lines.find((l) => l.startsWith(`${MARKERS.verdict} `));
  const verdict = verdictLine ? parseVerdictLine(verdictLine.slice(MARKERS.verdict.length + 1)) : undefined;
  if (!verdict) {
    report.record = { state: 'damaged', why: 'the record holds no verdict line' };
    return report;
  }
  report.verdict = verdict;
  if (verdict.kind === 'kmod') report.parts = splitParts(report.log ?? '');
  return report;
}

export interface RefusalSummary {
  /** One line: the program and the verifier's reason (`prog 'count_sys_enter': R0 invalid mem access 'map_value_or_null'`). */
  summary: string;
  /** The verifier's log of the refused program (between libbpf's BEGIN and END PROG LOAD LOG), when it printed one. */
  verifierLog?: string;
}

/**
 * Why the verifier stopped, from its log: it ends with its statistics
 * ("processed N insns ..."); the lines between the last instruction it
 * checked ("8: (79) r6 = *(u64 *)(r0 +8)") and them say why.
 */
function verifierReason(body: string[]): string | undefined {
  let stats = body.length - 1;
  while (stats >= 0 && !/^processed \d+ insns/.test(body[stats]!)) stats--;
  const checked = (stats >= 0 ? body.slice(0, stats) : body).filter((l) => l.trim() !== '' && !l.startsWith(';'));
  let lastInsn = checked.length - 1;
  while (lastInsn >= 0 && !/^\d+: \(/.test(checked[lastInsn]!)) lastInsn--;
  const why = checked.slice(lastInsn + 1).map((l) => l.trim());
  return why.length ? why.join('; ') : checked.at(-1)?.trim();
}

/** What bpftool's output says went wrong. */
export function summarizeRefusal(log: string): RefusalSummary {
  const lines = log.split('\n');
  const begin = lines.findIndex((l) => /-- BEGIN PROG LOAD LOG --/.test(l));
  const prog = /prog '([^']+)'/.exec(begin >= 0 ? lines[begin]! : (lines.find((l) => /prog '[^']+'.*failed/.test(l)) ?? ''))?.[1];
  if (begin >= 0) {
    const endAt = lines.findIndex((l, i) => i > begin && /-- END PROG LOAD LOG --/.test(l));
    const body = lines.slice(begin + 1, endAt >= 0 ? endAt : undefined);
    const reason = verifierReason(body) ?? 'refused by the verifier';
    return { summary: `${prog ? `prog '${prog}': ` : ''}${reason}`, verifierLog: body.join('\n').trim() };
  }
  // No verifier log: libbpf or bpftool refused the object before the kernel saw it (or the kernel said why in one line).
  const libbpf = lines.filter(
    (l) => /^libbpf: /.test(l) && /fail|error|invalid|unsupported|not supported|unknown|deprecated|-E[A-Z]+/i.test(l),
  );
  const error = lines.find((l) => /^Error: /.test(l));
  const reason = [libbpf[0]?.replace(/^libbpf: /, ''), error?.replace(/^Error: /, '')].filter(Boolean).join('; ');
  return { summary: reason || 'bpftool could not load the object' };
}

/**
 * What the legacy loader's output says the kernel refused: the first refused
 * program (its section) with the verifier's reason from the end of its log,
 * or else the first map the kernel would not create; how many more.
 */
export function summarizeLegacyRefusal(log: string): RefusalSummary {
  const lines = log.split('\n');
  const refusedProgs = lines.filter((l) => /^prog \S+ refused/.test(l));
  const refusedMaps = lines.filter((l) => /^map \S+ refused/.test(l));
  const first = lines.findIndex((l) => /^prog \S+ refused/.test(l));
  if (first >= 0) {
    const m = /^prog (\S+) refused(?: \(\d+ insns\))?: (.*)$/.exec(lines[first]!);
    const section = m?.[1] ?? lines[first]!.split(' ')[1]!;
    const errno = m?.[2]?.trim();
    const more =
      refusedProgs.length > 1 ? ` (and ${refusedProgs.length - 1} more program${refusedProgs.length === 2 ? '' : 's'} refused)` : '';
    const begin = lines.findIndex((l, i) => i > first && l.startsWith(`-- BEGIN PROG LOAD LOG ${section} `));
    if (begin >= 0) {
      const endAt = lines.findIndex((l, i) => i > begin && /^-- END PROG LOAD LOG --/.test(l));
      const body = lines.slice(begin + 1, endAt >= 0 ? endAt : undefined);
      // A log that filled every buffer kept only its start (kernels before 6.4): its last lines are not the reason.
      const reason = /this is not its end/.test(lines[begin]!)
        ? `${errno ?? 'refused by the verifier'} (the verifier's log was too long to keep its end)`
        : (verifierReason(body) ?? errno ?? 'refused by the verifier');
      return {
        summary: `prog '${section}': ${reason}${more}`,
        verifierLog: [lines[first]!, ...lines.slice(begin, endAt >= 0 ? endAt + 1 : undefined)].join('\n').trim(),
      };
    }
    return { summary: `prog '${section}': ${errno ?? 'refused by the kernel'}${more}` };
  }
  if (refusedMaps.length) {
    const more = refusedMaps.length > 1 ? ` (and ${refusedMaps.length - 1} more map${refusedMaps.length === 2 ? '' : 's'})` : '';
    return { summary: `the kernel refused to create ${refusedMaps[0]!.replace(/^map (\S+) refused: /, "map '$1': ")}${more}` };
  }
  return { summary: 'the legacy loader says the kernel refused the probe' };
}

export interface Classified {
  verdict: VerdictKind;
  /** One line for people. */
  message: string;
  /** The verifier's log (refused) or the console's last lines (no boot, timeout, crash). */
  detail?: string;
  /** What to do about it, when the verdict's usual advice does not fit (the legacy loader could not read the probe). */
  hint?: string;
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/** The kernel's messages without their timestamps (`[    1.234567] `). */
function dmesgLines(dmesg: string): string[] {
  return dmesg
    .split('\n')
    .map((l) => l.replace(/^(<\d+>)?\[\s*\d+\.\d+\]\s*/, '').trim())
    .filter(Boolean);
}

function someOf(items: string[], n: number): string {
  const unique = [...new Set(items)];
  return unique.slice(0, n).join(', ') + (unique.length > n ? ` and ${unique.length - n} more` : '');
}

/**
 * Why the kernel refused a module, in its own words: a vermagic mismatch
 * (`version magic '...' should be '...'`), symbols whose CRC differs
 * (`disagrees about version of symbol`), symbols it does not export
 * (`Unknown symbol`), a struct module of another size, or what insmod
 * printed (`invalid module format`).
 */
export function summarizeModuleRefusal(insmod: string, dmesg: string): string {
  const kernel = dmesgLines(dmesg);
  const insmodLine = insmod
    .split('\n')
    .map((l) => l.trim())
    .find((l) => /^insmod: /.test(l));
  const reasons: string[] = [];
  const magic = kernel.find((l) => /version magic '[^']*' should be '[^']*'/.test(l));
  if (magic) reasons.push(magic);
  const disagrees = kernel.flatMap((l) => /disagrees about version of symbol (\S+)/.exec(l)?.[1] ?? []);
  if (disagrees.length) reasons.push(`disagrees about version of symbol ${someOf(disagrees, 3)}`);
  const unknown = kernel.flatMap((l) => /Unknown symbol (\S+)/.exec(l)?.[1] ?? []);
  if (unknown.length) reasons.push(`Unknown symbol ${someOf(unknown, 3)}`);
  if (!reasons.length) {
    const other = kernel.find((l) => /invalid|must match|section|format|error|failed|-E[A-Z]+|err -?\d+/i.test(l) && !/taint/i.test(l));
    if (other) reasons.push(other);
  }
  if (insmodLine) reasons.push(insmodLine);
  return reasons.join('; ') || 'insmod failed without a message';
}

export interface ClassifyOptions {
  /** What the guest loads, for messages: `probe` (default) or `module`. */
  subject?: 'probe' | 'module';
}

function classifyLegacy(v: Extract<GuestVerdict, { kind: 'legacy' }>, report: ConsoleReport): Classified {
  const log = report.log ?? '';
  const detail = log ? { detail: log } : {};
  // The loader's note when the probe names another kernel (libscap would refuse it before loading).
  const note = /^note: (the probe was built for .*)$/m.exec(log)?.[1];
  if (v.loaderExit === 0)
    return {
      verdict: 'loaded',
      message: `loaded ${v.programs} program${v.programs === 1 ? '' : 's'} with the legacy loader${note ? ` (${note})` : ''}`,
    };
  if (v.loaderExit === 1) {
    const refusal = summarizeLegacyRefusal(log);
    return {
      verdict: 'refused',
      message: refusal.summary,
      ...(refusal.verifierLog !== undefined ? { detail: refusal.verifierLog } : detail),
    };
  }
  // 2: the object could not be read or relocated; anything else: the loader itself failed. Neither is the kernel's verdict.
  const errors = log.split('\n').filter((l) => /^error: /.test(l));
  const why = errors.length
    ? `${errors[0]!.replace(/^error: /, '')}${errors.length > 1 ? ` (and ${errors.length - 1} more error${errors.length === 2 ? '' : 's'})` : ''}`
    : `exit ${v.loaderExit}`;
  return {
    verdict: 'unknown',
    message: `${v.loaderExit === 2 ? 'the legacy loader could not load the probe' : `the legacy loader failed (exit ${v.loaderExit})`}, so the kernel gave no verdict: ${why}`,
    ...detail,
    hint: "the probe's legacy object is malformed or uses what the legacy loader (builder/legacy-loader, like Falco's libscap) does not support: see the console log",
  };
}

function classifyModule(v: Extract<GuestVerdict, { kind: 'kmod' }>, report: ConsoleReport): Classified {
  const parts = report.parts ?? {};
  const name = parts.modules?.split(/\s+/)[0] ?? 'the module';
  const detail = report.log ? { detail: report.log } : {};
  if (v.insmodExit !== 0) {
    return {
      verdict: 'refused',
      message: `insmod failed (exit ${v.insmodExit}): ${summarizeModuleRefusal(parts.insmod ?? '', parts.dmesg ?? '')}`,
      ...detail,
    };
  }
  if (!v.listed) return { verdict: 'refused', message: 'insmod exited 0 but the module is not in /proc/modules', ...detail };
  const devices = (parts.devices ?? '').split('\n').filter(Boolean);
  const rmmod =
    v.rmmodExit === 0 && v.unloaded
      ? 'rmmod: exit 0'
      : `rmmod: exit ${v.rmmodExit}${v.unloaded ? '' : ', still loaded'}${parts.rmmod ? ` (${parts.rmmod.split('\n')[0]})` : ''}`;
  return {
    verdict: 'loaded',
    message: `loaded module ${name} (devices: ${devices.length ? devices.join(' ') : 'none'}; ${rmmod})`,
    ...detail,
  };
}

/** The verdict of one VM run. A cancelled run has none: the caller checks `vm.aborted` first. */
export function classify(vm: VmOutcome, report: ConsoleReport, timeoutMs: number, options: ClassifyOptions = {}): Classified {
  const subject = options.subject ?? 'probe';
  const v = report.verdict;
  if (v && report.record.state === 'complete') {
    if (v.kind === 'kmod') return classifyModule(v, report);
    if (v.kind === 'legacy') return classifyLegacy(v, report);
    if (!v.bpffs)
      return {
        verdict: 'refused',
        message: 'the kernel could not mount the BPF file system (bpffs), so nothing could be loaded',
        ...(report.log ? { detail: report.log } : {}),
      };
    if (v.bpftoolExit === 0) return { verdict: 'loaded', message: `loaded ${v.programs} program${v.programs === 1 ? '' : 's'}` };
    const refusal = summarizeRefusal(report.log ?? '');
    return {
      verdict: 'refused',
      message: refusal.summary,
      ...(refusal.verifierLog !== undefined ? { detail: refusal.verifierLog } : report.log ? { detail: report.log } : {}),
    };
  }
  const seconds = Math.round(timeoutMs / 1000);
  const console = lastLines(vm.console, 30);
  // The guest began its record: loading is over, but what it said did not arrive whole.
  if (report.record.state === 'damaged')
    return { verdict: 'unknown', message: `the guest's record was not read whole: ${report.record.why}`, detail: console };
  if (vm.timedOut) {
    if (report.initSeen)
      return {
        verdict: 'timeout',
        message: `the kernel booted but loading the ${subject} did not finish within ${seconds} s`,
        detail: console,
      };
    return {
      verdict: 'no-boot',
      message: `the kernel did not boot: no output from /init within ${seconds} s${report.panic ? ` (${report.panic})` : ''}`,
      detail: console,
    };
  }
  if (report.initSeen)
    // The kernel stopped (or the console was cut) after /init started and before its record: no verdict was read.
    return {
      verdict: 'unknown',
      message: `the guest stopped before its record while the ${subject} was loading${report.panic ? `: ${report.panic}` : ''}`,
      detail: console,
    };
  const why =
    report.panic ??
    (vm.stderr
      ? `qemu: ${vm.stderr.split('\n')[0]}`
      : vm.code === 0
        ? 'the machine reset before /init ran (the kernel crashed early, or its image is damaged)'
        : `qemu exited with ${vm.code ?? vm.signal} before /init ran`);
  return { verdict: 'no-boot', message: `the kernel did not boot: ${why}`, detail: [vm.stderr, console].filter(Boolean).join('\n') };
}
