// Benchmark: time to verify one probe in its own kernel (make the initramfs,
// boot, load with bpftool, power off), with KVM and without.
//
//   node --import tsx bench/verify-load.ts [--runs N] [--no-write]
//
// The kernel is a real Debian 12 6.1 image (test/helpers/kernel-image.ts),
// the probe the example probe built by the host builder against that
// kernel's own headers (outside the timing). Each configuration runs N times,
// alternating, and the medians are reported:
//
// - TCG booting the uncompressed vmlinux (PVH entry): what verify-load does;
// - TCG booting the bzImage (vmlinuz) as shipped;
// - KVM, when the host's KVM boots the kernel. Otherwise the section says
//   why not, and what deciding that cost (`auto` boots once under KVM,
//   bounded, before falling back to TCG).
//
// Also timed once: taking the bzImage out of the 70 MB image package (the
// reader stops after it) and unpacking vmlinux from it, both cached per
// package afterwards.
//
// Results go to docs/PERFORMANCE.md under "Verify-load".

import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHostBuilder } from '../src/builders/host.js';
import { writeFileAtomic } from '../src/util/fs.js';
import { chooseAccelerator, forgetAcceleratorChoice, type AcceleratorChoice } from '../src/verify/accelerator.js';
import { createKernelImageCache, extractKernelImage, uncompressBzImage, type KernelImage } from '../src/verify/kernel-image.js';
import { kvmDeviceUsable } from '../src/verify/qemu.js';
import { verifyLoad } from '../src/verify/verify-load.js';
import { PROJECT_ROOT } from '../test/helpers/cli.js';
import { debianTarget, sharedKernelRoot } from '../test/helpers/kernel-headers.js';
import { obtainDebianKernelImage } from '../test/helpers/kernel-image.js';
import { argValue, median } from './lib.js';

const DOC = join(PROJECT_ROOT, 'docs', 'PERFORMANCE.md');
const HEADING = '## Verify-load';

const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface Config {
  name: string;
  accelerator: 'tcg' | 'kvm';
  image: KernelImage;
  times: number[];
  verdicts: Set<string>;
}

async function main(): Promise<void> {
  const runs = Number(argValue('--runs') ?? 3);
  const write = !process.argv.includes('--no-write');
  const got = await obtainDebianKernelImage();
  if (!got.ok) {
    console.error(`verify-load: ${got.skip}`);
    process.exitCode = 2;
    return;
  }
  const { image } = got;
  const scratch = await mkdtemp(join(tmpdir(), 'falco-probes-bench-verify-'));
  const loadBefore = loadavg()[0] as number;
  try {
    // The probe: the example, built for this kernel by the host builder (not timed).
    const builder = createHostBuilder();
    const target = debianTarget(image.kernel, await builder.pin());
    const probe = join(scratch, 'probe.o');
    await mkdir(join(scratch, 'build'), { recursive: true });
    await builder.build({
      target,
      kernelRoot: await sharedKernelRoot(image.kernel),
      driverDir: join(PROJECT_ROOT, 'examples', 'probe'),
      workDir: join(scratch, 'build'),
      outFile: probe,
      logFile: join(scratch, 'build.log'),
    });

    // One-time costs per kernel image package.
    const t0 = performance.now();
    const extracted = await extractKernelImage(image.debPath, 'deb', join(scratch, 'extract'));
    const extractMs = performance.now() - t0;
    const bz = await readFile(extracted.path);
    const t1 = performance.now();
    const vmlinux = await uncompressBzImage(bz);
    const unpackMs = performance.now() - t1;
    const prepared = await createKernelImageCache(join(scratch, 'images')).prepare(image.ref, image.debPath);
    if (!prepared.vmlinux || !vmlinux) throw new Error('no uncompressed kernel could be made');

    const configs: Config[] = [
      { name: 'TCG, vmlinux (PVH entry; what verify-load boots)', accelerator: 'tcg', image: prepared, times: [], verdicts: new Set() },
      {
        name: 'TCG, vmlinuz (bzImage as shipped)',
        accelerator: 'tcg',
        image: { vmlinuz: prepared.vmlinuz, sha256: prepared.sha256 },
        times: [],
        verdicts: new Set(),
      },
    ];

    // KVM: usable only if a bounded boot under it reaches /init.
    forgetAcceleratorChoice();
    const kvmDevice = await kvmDeviceUsable();
    const t2 = performance.now();
    const auto: AcceleratorChoice = await chooseAccelerator({
      requested: 'auto',
      kernel: prepared.vmlinux,
      workDir: join(scratch, 'kvm-check'),
    });
    const decideMs = performance.now() - t2;
    if (auto.accelerator === 'kvm')
      configs.push({ name: 'KVM, vmlinux', accelerator: 'kvm', image: prepared, times: [], verdicts: new Set() });

    for (let i = 0; i < runs; i++) {
      for (const c of configs) {
        const workDir = join(scratch, `run-${i}-${c.accelerator}-${c.image.vmlinux ? 'vmlinux' : 'vmlinuz'}`);
        const started = performance.now();
        const v = await verifyLoad({ probeFile: probe, kernelImage: c.image, workDir, accelerator: c.accelerator, timeoutMs: 300_000 });
        c.times.push(performance.now() - started);
        c.verdicts.add(`${v.verdict}: ${v.message}`);
        console.log(`${c.name}: ${sec(performance.now() - started)} (${v.verdict}; VM ${sec(v.ms)})`);
        await rm(workDir, { recursive: true, force: true });
      }
    }
    const loadAfter = loadavg()[0] as number;

    const kvmLine =
      auto.accelerator === 'kvm'
        ? `KVM works here (${auto.reason}); deciding cost ${sec(decideMs)} once per process.`
        : kvmDevice.ok
          ? `KVM is not used here: /dev/kvm opens, but ${auto.reason}. Deciding that cost ${sec(auto.checkMs)} (the bounded check boot), once per process; every VM then runs under TCG.`
          : `KVM is not used here: ${auto.reason}, so \`auto\` picks TCG at once (deciding cost ${Math.round(decideMs)} ms, no check boot). On hosts where /dev/kvm opens, \`auto\` first boots the kernel under KVM, bounded by 20 s, and falls back to TCG if /init does not answer (FACTS: nested hypervisors without vmx/svm hang there).`;

    const section = [
      HEADING,
      '',
      'Reproduce: `node --import tsx bench/verify-load.ts --runs 3`',
      '',
      `Time to verify one probe in its own kernel: write the initramfs (busybox-static, bpftool and its libraries, the probe), boot a real Debian ${image.kernel.release} kernel under qemu-system-x86_64 with 512 MiB, load every program with \`bpftool prog loadall\`, read the verdict from the serial console, power off. The probe is the example probe built for that kernel's headers (2 programs); every run's verdict was \`${[...new Set(configs.flatMap((c) => [...c.verdicts]))].join('`, `')}\`. Medians of ${runs} runs per configuration, alternating.`,
      '',
      `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} cores, load average ${loadBefore.toFixed(1)} before and ${loadAfter.toFixed(1)} after (other work shared the machine: absolute times are rough).`,
      '',
      '| configuration | median | min | max |',
      '| --- | ---: | ---: | ---: |',
      ...configs.map((c) => `| ${c.name} | ${sec(median(c.times))} | ${sec(Math.min(...c.times))} | ${sec(Math.max(...c.times))} |`),
      '',
      `- ${kvmLine}`,
      `- Once per kernel image package, then cached: taking the bzImage (${(await stat(extracted.path)).size} bytes) out of the ${(image.size / 1e6).toFixed(1)} MB package ${sec(extractMs)} (the reader stops after it: \`boot/\` comes first, the 400 MB of modules are never decompressed), unpacking the ${(vmlinux.length / 1e6).toFixed(1)} MB vmlinux from it ${sec(unpackMs)} (xz).`,
      '- Booting vmlinux enters the kernel at its PVH entry: no real-mode setup, no in-guest decompression, which software emulation makes slow. The bzImage stays the recorded identity of the kernel (its sha256 goes into the index).',
      '- VMs run in parallel up to `-j`, and no more than available memory holds (guest memory + 128 MiB each, 512 MiB left to the host).',
      '',
    ].join('\n');
    console.log(section);
    if (!write) return;
    let doc = '';
    try {
      doc = await readFile(DOC, 'utf8');
    } catch {
      doc = '# Performance\n\nBenchmarks live in `bench/`; each section says how to reproduce its figures.\n\n';
    }
    const start = doc.indexOf(`${HEADING}\n`);
    if (start >= 0) {
      const next = doc.indexOf('\n## ', start + HEADING.length);
      doc = doc.slice(0, start) + section + (next >= 0 ? `\n${doc.slice(next + 1)}` : '');
    } else {
      doc = `${doc.replace(/\n*$/, '\n\n')}${section}`;
    }
    await writeFileAtomic(DOC, doc);
    console.log(`written: ${DOC}`);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
