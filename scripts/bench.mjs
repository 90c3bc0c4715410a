#!/usr/bin/env node
// Runs the benchmarks (compiled) one after another: `npm run bench [-- name ...]`.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

const dir = new URL('../bench/dist/', import.meta.url).pathname;
const all = readdirSync(dir)
  .filter(
    (f) => f.endsWith('.js') && !['measure.js', 'podman-baseline.js', 'daemon.js'].includes(f) && !f.startsWith('_'),
  )
  .map((f) => f.replace(/\.js$/, ''));
const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : all) {
  console.log(`\n# bench/${name}`);
  const r = spawnSync(process.execPath, ['--enable-source-maps', '--expose-gc', `${dir}${name}.js`], {
    stdio: 'inherit',
  });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
