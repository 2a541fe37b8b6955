import { copyFile, cp, lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DriverKind, DriverPin } from '../graph/types.js';
import { FalcoProbesError } from '../util/errors.js';
import { configureFile, parseVersionTriple } from './cmake-configure.js';

// The recipe turns a driver's source (read-only, shared by every target) into
// a build directory of the target's own: a copy, plus what Falco's CMake
// would have generated before kbuild runs.
//
// - `kbuild`: the source is a plain kbuild directory (this repository's
//   examples/probe). The whole source is copied, so that a bpfDir below it
//   can include files from above.
// - `falco-libs`: falcosecurity/libs. Only `driver/` is needed and it is kept
//   as it is (older tags include "../driver_config.h"). What CMake does for
//   the legacy probe (driver/CMakeLists.txt, driver/bpf/CMakeLists.txt) is
//   done here:
//     driver/driver_config.h from driver_config.h.in (API and schema versions
//       from API_VERSION and SCHEMA_VERSION; version, name, device name,
//       commit from the pin);
//     the driver/*.h headers beside the probe sources (CMake copies them into
//       one flat directory; newer probes include "driver_config.h" and
//       configure tests include "../../ppm_events_public.h");
//     for each driver/bpf/configure/<MODULE>/: Makefile.inc from
//       configure/Makefile.inc.in, and configure/Makefile and build.sh copied
//       in, which the probe's Makefile runs to detect kernel features.
//   For the kernel module (kind kmod), what driver/CMakeLists.txt does for
//   its `src/` folder: driver/Makefile from Makefile.in (DRIVER_NAME, and
//   KBUILD_FLAGS empty as in a release build), driver_config.h, and the same
//   driver/configure/<MODULE>/ files. The module is kbuild's M=driver.

// When what a recipe writes changes, bump its number in RECIPE_VERSIONS
// (src/graph/key.ts): it is part of every key built with the recipe.

/** Falco's names for the driver: the kernel module, device and probe are all `falco`. */
export const FALCO_DRIVER_NAME = 'falco';

export interface PreparedDriver {
  /** The copy's root: recorded in debug info as a stable name. */
  rootDir: string;
  /** The kbuild directory (M=). */
  moduleDir: string;
  /** The object kbuild leaves in moduleDir. */
  objectFile: string;
}

// Links are copied as they are (relative ones stay relative), so the copy
// never points back into the shared source.
const COPY_OPTIONS = { recursive: true, errorOnExist: true, force: false, verbatimSymlinks: true } as const;

const SEGMENT_RE = /^[A-Za-z0-9_+~-][A-Za-z0-9._+~-]*$/;
const OBJECT_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*\.o$/;
const MODULE_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\.ko$/;

/** bpfDir: `.` or a relative path of plain segments (no `..`, no absolute path). */
export function checkBpfDir(bpfDir: string): string[] {
  if (bpfDir === '.' || bpfDir === '') return [];
  const parts = bpfDir.split('/');
  if (parts.some((p) => !SEGMENT_RE.test(p) || p === '.' || p === '..'))
    throw new FalcoProbesError(
      'config',
      `driver bpfDir ${JSON.stringify(bpfDir)} must be "." or a relative path without "." or ".." segments`,
    );
  return parts;
}

export function checkObjectName(object: string): string {
  if (!OBJECT_RE.test(object))
    throw new FalcoProbesError('config', `driver object ${JSON.stringify(object)} must be a plain file name ending in .o (probe.o)`);
  return object;
}

export function checkModuleName(module: string): string {
  if (!MODULE_RE.test(module))
    throw new FalcoProbesError('config', `driver module ${JSON.stringify(module)} must be a plain file name ending in .ko (falco.ko)`);
  return module;
}

/** The kbuild directory and the file kbuild leaves there, for one kind of a driver. */
function kindLayout(
  driver: Pick<DriverPin, 'name' | 'bpfDir' | 'object' | 'kmodDir' | 'module'>,
  buildKind: DriverKind,
): { dirKey: 'bpfDir' | 'kmodDir'; dir: string; parts: string[]; file: string } {
  if (buildKind === 'kmod') {
    if (driver.kmodDir === undefined || driver.module === undefined)
      throw new FalcoProbesError(
        'config',
        `driver ${driver.name} builds kind kmod but names no kmodDir and module in kernels/drivers.yaml`,
      );
    return { dirKey: 'kmodDir', dir: driver.kmodDir, parts: checkBpfDir(driver.kmodDir), file: checkModuleName(driver.module) };
  }
  if (driver.bpfDir === undefined || driver.object === undefined)
    throw new FalcoProbesError('config', `driver ${driver.name} builds kind bpf but names no bpfDir and object in kernels/drivers.yaml`);
  return { dirKey: 'bpfDir', dir: driver.bpfDir, parts: checkBpfDir(driver.bpfDir), file: checkObjectName(driver.object) };
}

async function kind(path: string): Promise<'dir' | 'file' | 'link' | 'missing' | 'other'> {
  try {
    const st = await lstat(path);
    if (st.isDirectory()) return 'dir';
    if (st.isFile()) return 'file';
    if (st.isSymbolicLink()) return 'link';
    return 'other';
  } catch {
    return 'missing';
  }
}

async function requireDir(path: string, what: string, hint: string): Promise<void> {
  if ((await kind(path)) !== 'dir') throw new FalcoProbesError('build', `${what} not found`, { location: { file: path }, hint });
}

export async function prepareDriverBuild(
  driver: Pick<DriverPin, 'name' | 'version' | 'recipe' | 'bpfDir' | 'object' | 'kmodDir' | 'module'>,
  driverDir: string,
  destDir: string,
  buildKind: DriverKind = 'bpf',
): Promise<PreparedDriver> {
  const layout = kindLayout(driver, buildKind);
  const objectFile = layout.file;
  await requireDir(driverDir, 'driver source directory', 'the runner unpacks the driver source before building');
  const moduleDir = join(destDir, ...layout.parts);

  if (driver.recipe === 'kbuild') {
    await requireDir(join(driverDir, ...layout.parts), `driver directory ${layout.dir}`, `check ${layout.dirKey} of driver ${driver.name}`);
    await cp(driverDir, destDir, COPY_OPTIONS);
  } else if (driver.recipe === 'falco-libs') {
    await prepareFalcoLibs(driver, driverDir, destDir, layout.parts, buildKind);
  } else {
    throw new FalcoProbesError(
      'config',
      `unknown recipe ${JSON.stringify((driver as { recipe: string }).recipe)} for driver ${driver.name}`,
    );
  }

  if ((await kind(join(moduleDir, 'Makefile'))) !== 'file')
    throw new FalcoProbesError('build', `no kbuild Makefile in the driver's ${layout.dir}`, {
      location: { file: join(driverDir, ...layout.parts, 'Makefile') },
      hint:
        buildKind === 'kmod'
          ? 'a module directory needs a kbuild Makefile with `obj-m += <name>.o` (a configured DKMS tree has one)'
          : 'a probe directory needs a Makefile with `always-y += probe.o` (see examples/probe)',
    });
  // A source directory that was built in place would leave an object newer
  // than its sources, and make would then keep it instead of compiling.
  const stem = objectFile.replace(/\.k?o$/, '');
  const stale =
    buildKind === 'kmod'
      ? [objectFile, `${stem}.o`, `${stem}.mod`, `${stem}.mod.c`, `${stem}.mod.o`, 'modules.order', 'Module.symvers']
      : [objectFile, `${stem}.ll`, `.${objectFile}.cmd`];
  for (const name of stale) await rm(join(moduleDir, name), { force: true });
  return { rootDir: destDir, moduleDir, objectFile };
}

async function prepareFalcoLibs(
  driver: Pick<DriverPin, 'name' | 'version'>,
  driverDir: string,
  destDir: string,
  parts: string[],
  buildKind: DriverKind,
): Promise<void> {
  const srcDriver = join(driverDir, 'driver');
  await requireDir(
    srcDriver,
    'driver/ of falcosecurity/libs',
    'the falco-libs recipe expects the libs source tree (driver/, driver/bpf/) at the root of the unpacked source',
  );
  if (buildKind === 'kmod') {
    if (parts.length !== 1 || parts[0] !== 'driver')
      throw new FalcoProbesError(
        'config',
        `driver ${driver.name}: the falco-libs recipe builds the kernel module in driver/ (kmodDir: driver), not ${parts.join('/') || '.'}`,
      );
  } else {
    if (parts[0] !== 'driver' || parts.length < 2)
      throw new FalcoProbesError(
        'config',
        `driver ${driver.name}: the falco-libs recipe needs bpfDir inside driver/ (driver/bpf), not ${parts.join('/') || '.'}`,
      );
    if ((await kind(join(driverDir, ...parts))) !== 'dir')
      throw new FalcoProbesError(
        'config',
        `driver ${driver.name} ${driver.version} has no legacy eBPF probe: ${parts.join('/')} is not in its source`,
        {
          location: { file: join(driverDir, ...parts) },
          hint: "driver/bpf was dropped after 9.1.0+driver (Falco 0.44 loads only the kernel module): remove bpf from this driver's kinds in kernels/drivers.yaml",
        },
      );
  }

  const destDriver = join(destDir, 'driver');
  await mkdir(destDir, { recursive: true });
  await cp(srcDriver, destDriver, COPY_OPTIONS);

  const vars = await falcoConfigureVars(driver, srcDriver);
  const templatePath = join(destDriver, 'driver_config.h.in');
  if ((await kind(templatePath)) !== 'file')
    throw new FalcoProbesError('build', 'driver/driver_config.h.in not found', {
      location: { file: join(srcDriver, 'driver_config.h.in') },
    });
  const config = configureFile(await readFile(templatePath, 'utf8'), vars, { file: join(srcDriver, 'driver_config.h.in'), strict: true });
  await writeNew(join(destDriver, 'driver_config.h'), config);

  const buildDir = join(destDir, ...parts);
  if (buildKind === 'kmod') {
    // driver/CMakeLists.txt: configure_file(Makefile.in src/Makefile). KBUILD_FLAGS holds only debug flags, empty in a release build.
    const makefileIn = join(destDriver, 'Makefile.in');
    if ((await kind(makefileIn)) !== 'file')
      throw new FalcoProbesError('build', 'driver/Makefile.in not found', {
        location: { file: join(srcDriver, 'Makefile.in') },
        hint: 'this libs version has no kernel module Makefile template',
      });
    const makefile = configureFile(
      await readFile(makefileIn, 'utf8'),
      { ...vars, KBUILD_FLAGS: '' },
      { file: join(srcDriver, 'Makefile.in'), strict: true },
    );
    await writeNew(join(destDriver, 'Makefile'), makefile);
  } else {
    // CMake's flat source directory: the driver's headers beside the probe's.
    for (const name of (await readdir(destDriver)).sort()) {
      if (!name.endsWith('.h') || (await kind(join(destDriver, name))) !== 'file') continue;
      if ((await kind(join(buildDir, name))) === 'missing') await copyFile(join(destDriver, name), join(buildDir, name));
    }
  }

  const configureDir = join(buildDir, 'configure');
  if ((await kind(configureDir)) !== 'dir') return;
  const sharedTemplate = join(configureDir, 'Makefile.inc.in');
  for (const module of (await readdir(configureDir)).sort()) {
    const moduleDir = join(configureDir, module);
    if ((await kind(moduleDir)) !== 'dir') continue;
    const ownTemplate = join(moduleDir, 'Makefile.inc.in');
    const template =
      (await kind(ownTemplate)) === 'file' ? ownTemplate : (await kind(sharedTemplate)) === 'file' ? sharedTemplate : undefined;
    if (template === undefined) continue;
    for (const shared of ['Makefile', 'build.sh']) {
      const from = join(configureDir, shared);
      if ((await kind(from)) === 'file' && (await kind(join(moduleDir, shared))) === 'missing')
        await copyFile(from, join(moduleDir, shared));
    }
    const text = configureFile(await readFile(template, 'utf8'), { ...vars, CONFIGURE_MODULE: module }, { file: template });
    await writeNew(join(moduleDir, 'Makefile.inc'), text);
  }
}

/** The variables CMake would define for driver_config.h.in and configure/Makefile.inc.in. */
async function falcoConfigureVars(driver: Pick<DriverPin, 'name' | 'version'>, driverTree: string): Promise<Record<string, string>> {
  const read = async (name: string) => {
    const file = join(driverTree, name);
    try {
      return parseVersionTriple(await readFile(file, 'utf8'), file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new FalcoProbesError('build', `driver/${name} not found`, {
          location: { file },
          hint: 'the falco-libs recipe reads the driver API and schema versions from driver/API_VERSION and driver/SCHEMA_VERSION',
        });
      throw err;
    }
  };
  const [apiMajor, apiMinor, apiPatch] = await read('API_VERSION');
  const [schemaMajor, schemaMinor, schemaPatch] = await read('SCHEMA_VERSION');
  return {
    PPM_API_CURRENT_VERSION_MAJOR: apiMajor,
    PPM_API_CURRENT_VERSION_MINOR: apiMinor,
    PPM_API_CURRENT_VERSION_PATCH: apiPatch,
    PPM_SCHEMA_CURRENT_VERSION_MAJOR: schemaMajor,
    PPM_SCHEMA_CURRENT_VERSION_MINOR: schemaMinor,
    PPM_SCHEMA_CURRENT_VERSION_PATCH: schemaPatch,
    DRIVER_VERSION: driver.version,
    DRIVER_NAME: FALCO_DRIVER_NAME,
    DRIVER_DEVICE_NAME: FALCO_DRIVER_NAME,
    DRIVER_PACKAGE_NAME: FALCO_DRIVER_NAME,
    // A tarball carries no git metadata; like driverkit, record the version.
    GIT_COMMIT: driver.version,
    DRIVER_COMMIT: driver.version,
    // Names of the same values in templates from before 2022.
    PROBE_VERSION: driver.version,
    PROBE_NAME: FALCO_DRIVER_NAME,
    PROBE_DEVICE_NAME: FALCO_DRIVER_NAME,
  };
}

async function writeNew(path: string, text: string): Promise<void> {
  // The copy is ours alone; a generated file replaces any stale one shipped in the source.
  await rm(path, { force: true });
  await writeFile(path, text);
}
