import { FalcoProbesError } from '../util/errors.js';

/** Fill `{name}` placeholders from `vars`. An unknown placeholder is a config error (it names the template). */
export function fillTemplate(template: string, vars: Record<string, string | undefined>): string {
  return template.replace(/\{([A-Za-z][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
    const v = vars[name];
    if (v === undefined)
      throw new FalcoProbesError('config', `template ${JSON.stringify(template)} uses {${name}}, which is not known here`, {
        hint: `known placeholders: ${Object.keys(vars)
          .filter((k) => vars[k] !== undefined)
          .sort()
          .join(', ')}`,
      });
    return v;
  });
}
