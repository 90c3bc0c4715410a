#!/usr/bin/env node
// Runs every compiled test file with node's own test runner.
// Node 20's `--test` takes no globs, so the files are found here.
// Usage: node scripts/test.mjs [substring ...]   (only files whose path contains one of them)
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const testRoots = [];
for (const pkg of readdirSync(join(root, 'packages'))) {
  for (const out of ['dist', 'dist-test']) testRoots.push(join(root, 'packages', pkg, out));
}
testRoots.push(join(root, 'e2e', 'dist'));

function walk(dir, found) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, found);
    else if (name.endsWith('.test.js')) found.push(path);
  }
}

const files = [];
for (const dir of testRoots) walk(dir, files);
const filters = process.argv.slice(2);
const selected = files.filter((f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s))).sort();
if (selected.length === 0) {
  console.error('no test files found (did the build run?)');
  process.exit(1);
}
// Files run one at a time: many tests use real kernel objects (cgroups, loop devices, podman engines)
// and a 2-core machine gains little from running them side by side.
const result = spawnSync(
  process.execPath,
  ['--enable-source-maps', '--test', '--test-concurrency=1', '--test-reporter=spec', ...selected],
  { stdio: 'inherit', cwd: root },
);
process.exit(result.status ?? 1);
