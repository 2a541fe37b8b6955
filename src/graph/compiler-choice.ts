import type { KernelDescriptor } from '../config/types.js';
import type { BuilderPin, CompilerImagePin, DriverKind } from './types.js';

// Which builder compiles a target. A probe (clang) is built by the default
// builder. A kernel module must be built by its kernel's own compiler, so a
// module whose kernel records another gcc than the default builder's is
// given the compiler image of kernels/drivers.yaml whose gcc has that major
// version, as driverkit picks a builder image per kernel. The choice is in
// the target's builder pin, so in its key, and `plan` shows it.
//
// The kernel's gcc comes from its lockfile entry: Debian's headers depend on
// `linux-compiler-gcc-<N>-<arch>`, which the definitions follow with role
// `compiler`. A kernel without such a package keeps the default builder; its
// build still checks the headers' CONFIG_CC_VERSION_TEXT and refuses another
// compiler, naming the one it needs.

/** The lockfile role of the package that names the kernel's compiler. */
export const COMPILER_ROLE = 'compiler';

/** The major version of the gcc that built the kernel, when its entry records it. */
export function kernelGccMajor(kernel: Pick<KernelDescriptor, 'packages'>): number | undefined {
  const pkg = kernel.packages.find((p) => p.role === COMPILER_ROLE);
  const m = pkg ? /(?:^|-)gcc-(\d+)(?:-|$)/.exec(pkg.name) : null;
  return m ? Number(m[1]) : undefined;
}

/** The major version of a `gcc --version` line (`gcc (Debian 14.2.0-19) 14.2.0` is 14). */
export function gccMajor(line: string): number | undefined {
  const m = /(\d+)\.\d+(?:\.\d+)?\s*$/.exec(line.trim());
  return m ? Number(m[1]) : undefined;
}

export function builderForTarget(
  kernel: Pick<KernelDescriptor, 'packages'>,
  kind: DriverKind,
  builder: BuilderPin,
  compilerImages: readonly CompilerImagePin[] = [],
): BuilderPin {
  if (kind !== 'kmod') return builder;
  const need = kernelGccMajor(kernel);
  if (need === undefined || (builder.gcc !== undefined && gccMajor(builder.gcc) === need)) return builder;
  const image = compilerImages.find((c) => gccMajor(c.gcc) === need);
  if (!image) return builder;
  return { kind: 'docker', image: image.image, clang: image.clang, gcc: image.gcc, release: image.release };
}

/** `host`, `docker`, or `docker:<release>` for a compiler image: how plan and build name a builder. */
export function builderLabel(pin: BuilderPin): string {
  return pin.kind === 'host' ? 'host' : pin.release !== undefined ? `docker:${pin.release}` : 'docker';
}
