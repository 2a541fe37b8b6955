import { FalcoProbesError } from '../util/errors.js';

// CMake's configure_file(), the part falcosecurity/libs relies on: `${VAR}`
// and `@VAR@` are replaced by the variable's value (CMake writes an empty
// string for an undefined one), `#cmakedefine VAR ...` becomes `#define VAR
// ...` or `/* #undef VAR */`, `#cmakedefine01 VAR` becomes `#define VAR 0|1`.
// Falco's templates depend on the empty-string rule: its Makefile.inc.in
// writes `@@NEWLINE@@`, which CMake turns into `@@` on both sides of a subst.

const VAR_NAME = '[A-Za-z_0-9/.+-]+';
const PLACEHOLDER_RE = new RegExp(`\\$\\{(${VAR_NAME})\\}|@(${VAR_NAME})@`, 'g');
const CMAKEDEFINE_RE = /^(\s*)#(\s*)cmakedefine(01)?\s+([A-Za-z_0-9]+)(.*)$/;

export interface ConfigureOptions {
  /** The template's path, for error messages. */
  file: string;
  /**
   * Refuse placeholders that name no variable instead of writing an empty
   * string: for files whose every value must be known (driver_config.h).
   */
  strict?: boolean;
}

function isCmakeFalse(value: string | undefined): boolean {
  if (value === undefined) return true;
  const v = value.toUpperCase();
  return (
    v === '' ||
    v === '0' ||
    v === 'OFF' ||
    v === 'NO' ||
    v === 'FALSE' ||
    v === 'N' ||
    v === 'IGNORE' ||
    v === 'NOTFOUND' ||
    v.endsWith('-NOTFOUND')
  );
}

export function configureFile(template: string, vars: Record<string, string>, opts: ConfigureOptions): string {
  const lines = template.split('\n');
  const lookup = (name: string, line: number, column: number): string => {
    const value = Object.hasOwn(vars, name) ? vars[name] : undefined;
    if (value === undefined) {
      if (opts.strict)
        throw new FalcoProbesError('input', `the template uses \${${name}}, which the recipe does not define`, {
          location: { file: opts.file, line, column },
          hint: `the recipe defines ${Object.keys(vars).sort().join(', ')}; a newer driver template may need a newer falco-probes`,
        });
      return '';
    }
    return value;
  };
  return lines
    .map((text, index) => {
      const lineNo = index + 1;
      const define = CMAKEDEFINE_RE.exec(text);
      if (define) {
        const [, indent, space, is01, name, rest] = define as unknown as [string, string, string, string | undefined, string, string];
        const value = Object.hasOwn(vars, name) ? vars[name] : undefined;
        if (is01) return `${indent}#${space}define ${name} ${isCmakeFalse(value) ? 0 : 1}`;
        if (isCmakeFalse(value)) return `${indent}/* #${space}undef ${name} */`;
        text = `${indent}#${space}define ${name}${rest}`;
      }
      return text.replace(PLACEHOLDER_RE, (_m, braced: string | undefined, at: string | undefined, offset: number) =>
        lookup((braced ?? at) as string, lineNo, offset + 1),
      );
    })
    .join('\n');
}

/** The first three numbers of a version file, as CMake's compute_versions reads API_VERSION and SCHEMA_VERSION. */
export function parseVersionTriple(text: string, file: string): [string, string, string] {
  const firstLine = text.split('\n')[0] ?? '';
  const numbers = firstLine.match(/[0-9]+/g) ?? [];
  if (numbers.length < 3)
    throw new FalcoProbesError('input', `expected a version like 8.0.0, found ${JSON.stringify(firstLine)}`, {
      location: { file, line: 1, column: 1 },
    });
  return [numbers[0] as string, numbers[1] as string, numbers[2] as string];
}
