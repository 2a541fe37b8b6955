// Written last by `npm run build`: dist/BUILT. bin/falco-probes.js runs the
// compiled tool while BUILT is newer than every file under src/; its text
// is the code hash of the sources compiled (src/graph/graph-cache.ts
// toolCodeHash), so the compiled tool keys its graph memo without hashing
// src/ at every start.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { hashCodeTree, BUILT_LINE_PREFIX } = await import(`${root}dist/graph/graph-cache.js`);
writeFileSync(`${root}dist/BUILT`, `${BUILT_LINE_PREFIX}${hashCodeTree(`${root}src`)}\n`);
