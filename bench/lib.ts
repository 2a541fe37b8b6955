// Small helpers shared by the benches (each bench stays runnable on its own with node --import tsx).

/** The value after `--name` on the command line, if any. */
export function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Node 20 reads and parses the file NODE_EXTRA_CA_CERTS names when it starts,
 * before any of the tool's code: on this VM (where it names the system's
 * whole CA bundle) `node -e 0` takes 87 to 91 ms with it and 31 to 33 ms
 * without. Say whether it is set.
 */
export function extraCaCertsLine(): string {
  const file = process.env['NODE_EXTRA_CA_CERTS'];
  return file
    ? `NODE_EXTRA_CA_CERTS=${file}: every node start reads and parses it (run with \`env -u NODE_EXTRA_CA_CERTS\` for a Node that does not)`
    : 'NODE_EXTRA_CA_CERTS is not set';
}
