import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgPath = fileURLToPath(new URL('../package.json', import.meta.url));
const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string; bin: Record<string, string> };

test("ocs-node --version prints the package's version", () => {
  const bin = resolve(dirname(pkgPath), pkg.bin['ocs-node'] as string);
  for (const flag of ['--version', '-V']) {
    const out = execFileSync(process.execPath, [bin, flag], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(out, `${pkg.version}\n`);
  }
});
