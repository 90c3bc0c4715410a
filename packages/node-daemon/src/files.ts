import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Writes a root-only file atomically: a crash never leaves half a key behind. */
export function writeSecretFile(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, path);
}

/** Reads a file that must be 0600; fixes a looser mode rather than trusting it silently. */
export function readSecretFile(path: string): string | undefined {
  if (!existsSync(path)) return undefined;
  chmodSync(path, 0o600);
  return readFileSync(path, 'utf8');
}
