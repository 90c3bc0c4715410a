#!/usr/bin/env node
// Runs the compiled test files of one tier with node's own test runner (docs/testing.md).
//
//   node scripts/test.mjs [--tier unit|host|guest|all] [substring ...]
//
// A file's name says its tier:
//   *.guest.test.js          guest: boots the production-like guest under QEMU (ZFS, cgroup v2, systemd)
//   *.host.test.js, e2e/**   host: real cgroups, loop devices, fscrypt, podman, dockerd, libvirt, nftables; root
//   *.test.js                unit: logic and in-process HTTP; no root, no host service, run in parallel
// With substrings, only the files whose path contains one of them run (of every tier unless
// --tier is given): the guest runs `node scripts/test.mjs storage/zfs. cgroups/v2.` that way.
import { availableParallelism, tmpdir } from 'node:os';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const TIERS = ['unit', 'host', 'guest'];

export function tierOf(path) {
  if (path.endsWith('.guest.test.js')) return 'guest';
  if (path.endsWith('.host.test.js') || path.startsWith('e2e/')) return 'host';
  return 'unit';
}

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
    else if (name.endsWith('.test.js')) found.push(relative(root, path));
  }
}

const args = process.argv.slice(2);
let tier;
const tierAt = args.indexOf('--tier');
if (tierAt >= 0) {
  tier = args[tierAt + 1];
  args.splice(tierAt, 2);
  if (tier !== 'all' && !TIERS.includes(tier)) {
    console.error(`--tier takes one of ${[...TIERS, 'all'].join(', ')}`);
    process.exit(2);
  }
}
const filters = args;
if (tier === undefined) tier = filters.length > 0 ? 'all' : 'unit';

const files = [];
for (const pkg of readdirSync(join(root, 'packages'))) {
  for (const out of ['dist', 'dist-test']) walk(join(root, 'packages', pkg, out), files);
}
walk(join(root, 'e2e', 'dist'), files);
const selected = files
  .filter((f) => tier === 'all' || tierOf(f) === tier)
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (selected.length === 0) {
  console.error(
    `no ${tier} test files found${filters.length ? ` matching ${filters.join(', ')}` : ''} (did the build run?)`,
  );
  process.exit(1);
}

// The unit tier is independent files with no shared host state: they run side by side. The
// others use real kernel objects (cgroups, loop devices, podman engines, the guest's CPU time)
// and run one file at a time. A unit-tier file that asks for a host service fails
// (OCS_TEST_TIER, read by requireHost in @ocs/host/testing): it belongs in the host tier.
const unitOnly = selected.every((f) => tierOf(f) === 'unit');
const concurrency = unitOnly ? Math.max(2, availableParallelism()) : 1;
// "No root" is kept, not hoped for: run as root, the unit tier drops to nobody (setpriv, no
// capabilities, no groups), where the checkout is readable to it.
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--'];
let prefix = [];
if (unitOnly && process.getuid?.() === 0) {
  const probe = spawnSync(NOBODY[0], [
    ...NOBODY.slice(1),
    process.execPath,
    '-e',
    'require("fs").accessSync(process.argv[1])',
    join(root, selected[0]),
  ]);
  if (probe.status === 0) prefix = NOBODY;
  else
    console.error(
      'the unit tier runs as root: the checkout is not readable to nobody (run it from a readable path to prove it needs no root)',
    );
}
// A test that hangs must not hold the run until CI's own limit: every test gets a deadline of
// its tier (its own `timeout` option overrides it). The guest tier's boot has its own in runInGuest.
const TEST_TIMEOUT_MS = { unit: 120_000, host: 300_000 };
const timeoutOf = (f) => TEST_TIMEOUT_MS[tierOf(f)];
const timeouts = selected.map(timeoutOf);
const deadline = timeouts.includes(undefined) ? undefined : Math.max(...timeouts);
const [command, ...commandArgs] = [...prefix, process.execPath];
const result = spawnSync(
  command,
  [
    ...commandArgs,
    '--enable-source-maps',
    '--test',
    `--test-concurrency=${concurrency}`,
    ...(deadline === undefined ? [] : [`--test-timeout=${deadline}`]),
    '--test-reporter=spec',
    ...selected,
  ],
  {
    stdio: 'inherit',
    cwd: root,
    env: {
      ...process.env,
      ...(unitOnly ? { OCS_TEST_TIER: 'unit' } : {}),
      ...(prefix.length ? { HOME: tmpdir() } : {}),
    },
  },
);
process.exit(result.status ?? 1);
