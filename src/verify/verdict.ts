import { MARKERS } from './initramfs.js';
import type { VmOutcome } from './qemu.js';

// From what the guest printed to a verdict. /init prints, in order:
//
//   FALCO-PROBES-INIT <uname -r>
//   FALCO-PROBES-LOG-BEGIN
//   <bpftool's output: libbpf messages, the verifier log when a program is refused>
//   FALCO-PROBES-LOG-END
//   FALCO-PROBES-VERDICT {"bpftool_exit":N,"programs":N,"bpffs":0|1}
//
// Kernel messages may come between them (a panic, a warning), and the
// firmware's last words have no line end ("Booting from ROM..FALCO-PROBES-INIT
// 6.1.0-57-amd64"): a marker is looked for anywhere in a line, its data after it.

export type VerdictKind = 'loaded' | 'refused' | 'no-boot' | 'timeout';

export interface ConsoleReport {
  /** /init ran: the kernel booted. */
  initSeen: boolean;
  /** `uname -r` in the guest. */
  release?: string;
  verdict?: { bpftoolExit: number; programs: number; bpffs: boolean };
  /** bpftool's output. */
  log?: string;
  /** The kernel's panic line, if it panicked. */
  panic?: string;
}

export function readConsole(console: string): ConsoleReport {
  const lines = console.split('\n');
  const report: ConsoleReport = { initSeen: false };
  let logStart = -1;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const init = line.indexOf(MARKERS.init);
    const verdict = line.indexOf(`${MARKERS.verdict} `);
    if (init >= 0) {
      report.initSeen = true;
      const release = line.slice(init + MARKERS.init.length).trim();
      if (release) report.release = release;
    } else if (line.endsWith(MARKERS.logBegin)) logStart = i + 1;
    else if (line.endsWith(MARKERS.logEnd) && logStart >= 0) {
      report.log = lines.slice(logStart, i).join('\n').trim();
      logStart = -1;
    } else if (verdict >= 0) {
      try {
        const v = JSON.parse(line.slice(verdict + MARKERS.verdict.length + 1)) as Record<string, unknown>;
        if (typeof v['bpftool_exit'] === 'number' && typeof v['programs'] === 'number')
          report.verdict = { bpftoolExit: v['bpftool_exit'], programs: v['programs'], bpffs: v['bpffs'] !== 0 };
      } catch {
        // a line mangled by interleaved kernel output is no verdict
      }
    }
    const panic = /Kernel panic - not syncing.*$/.exec(line);
    if (panic && !report.panic) report.panic = panic[0];
  }
  return report;
}

export interface RefusalSummary {
  /** One line: the program and the verifier's reason (`prog 'count_sys_enter': R0 invalid mem access 'map_value_or_null'`). */
  summary: string;
  /** The verifier's log of the refused program (between libbpf's BEGIN and END PROG LOAD LOG), when it printed one. */
  verifierLog?: string;
}

/** What bpftool's output says went wrong. */
export function summarizeRefusal(log: string): RefusalSummary {
  const lines = log.split('\n');
  const begin = lines.findIndex((l) => /-- BEGIN PROG LOAD LOG --/.test(l));
  const prog = /prog '([^']+)'/.exec(begin >= 0 ? lines[begin]! : (lines.find((l) => /prog '[^']+'.*failed/.test(l)) ?? ''))?.[1];
  if (begin >= 0) {
    const endAt = lines.findIndex((l, i) => i > begin && /-- END PROG LOAD LOG --/.test(l));
    const body = lines.slice(begin + 1, endAt >= 0 ? endAt : undefined);
    // The verifier ends with its statistics ("processed N insns ..."); the lines between the last
    // instruction it checked ("8: (79) r6 = *(u64 *)(r0 +8)") and them say why it stopped.
    let stats = body.length - 1;
    while (stats >= 0 && !/^processed \d+ insns/.test(body[stats]!)) stats--;
    const checked = (stats >= 0 ? body.slice(0, stats) : body).filter((l) => l.trim() !== '' && !l.startsWith(';'));
    let lastInsn = checked.length - 1;
    while (lastInsn >= 0 && !/^\d+: \(/.test(checked[lastInsn]!)) lastInsn--;
    const why = checked.slice(lastInsn + 1).map((l) => l.trim());
    const reason = (why.length ? why.join('; ') : checked.at(-1)?.trim()) ?? 'refused by the verifier';
    return { summary: `${prog ? `prog '${prog}': ` : ''}${reason}`, verifierLog: body.join('\n').trim() };
  }
  // No verifier log: libbpf or bpftool refused the object before the kernel saw it (or the kernel said why in one line).
  const libbpf = lines.filter((l) => /^libbpf: /.test(l) && /fail|error|invalid|unsupported|not supported|unknown|deprecated|-E[A-Z]+/i.test(l));
  const error = lines.find((l) => /^Error: /.test(l));
  const reason = [libbpf[0]?.replace(/^libbpf: /, ''), error?.replace(/^Error: /, '')].filter(Boolean).join('; ');
  return { summary: reason || 'bpftool could not load the object' };
}

export interface Classified {
  verdict: VerdictKind;
  /** One line for people. */
  message: string;
  /** The verifier's log (refused) or the console's last lines (no boot, timeout, crash). */
  detail?: string;
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/** The verdict of one VM run. A cancelled run has none: the caller checks `vm.aborted` first. */
export function classify(vm: VmOutcome, report: ConsoleReport, timeoutMs: number): Classified {
  const v = report.verdict;
  if (v) {
    if (!v.bpffs) return { verdict: 'refused', message: 'the kernel could not mount the BPF file system (bpffs), so nothing could be loaded', ...(report.log ? { detail: report.log } : {}) };
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
  if (vm.timedOut) {
    if (report.initSeen) return { verdict: 'timeout', message: `the kernel booted but loading the probe did not finish within ${seconds} s`, detail: console };
    return { verdict: 'no-boot', message: `the kernel did not boot: no output from /init within ${seconds} s${report.panic ? ` (${report.panic})` : ''}`, detail: console };
  }
  if (report.initSeen)
    // Loading crashed or stopped the kernel: the probe cannot be trusted on it.
    return { verdict: 'refused', message: `the kernel stopped while the probe was loading${report.panic ? `: ${report.panic}` : ''}`, detail: console };
  const why =
    report.panic ??
    (vm.stderr
      ? `qemu: ${vm.stderr.split('\n')[0]}`
      : vm.code === 0
        ? 'the machine reset before /init ran (the kernel crashed early, or its image is damaged)'
        : `qemu exited with ${vm.code ?? vm.signal} before /init ran`);
  return { verdict: 'no-boot', message: `the kernel did not boot: ${why}`, detail: [vm.stderr, console].filter(Boolean).join('\n') };
}
