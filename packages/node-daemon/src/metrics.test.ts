import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics } from './metrics.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** `name value` for every sample without labels. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_:][a-z0-9_:]*) (\S+)$/i.exec(line);
    if (m) out.set(m[1] as string, Number(m[2]));
  }
  return out;
}

function metrics() {
  return createMetrics({
    spacesByState: () => ({ active: 2, locked: 1 }),
    runningProcesses: () => 1,
    capacity: () => ({
      allocatable: { cpuMillicores: 1500, memoryBytes: 4 * GiB, storageBytes: 10 * GiB },
      used: { cpuMillicores: 250, memoryBytes: 256 * MiB, storageBytes: 64 * MiB },
    }),
  });
}

test('capacity: one metric per resource and kind, in base units (cores, bytes)', async () => {
  const text = await metrics().registry.metrics();
  const families = [...text.matchAll(/^# TYPE (ocs_capacity\S*) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
  assert.deepEqual(families, [
    'ocs_capacity_allocatable_cpu_cores gauge',
    'ocs_capacity_allocatable_memory_bytes gauge',
    'ocs_capacity_allocatable_storage_bytes gauge',
    'ocs_capacity_used_cpu_cores gauge',
    'ocs_capacity_used_memory_bytes gauge',
    'ocs_capacity_used_storage_bytes gauge',
  ]);
  const s = samples(text);
  assert.equal(s.get('ocs_capacity_allocatable_cpu_cores'), 1.5);
  assert.equal(s.get('ocs_capacity_used_cpu_cores'), 0.25);
  assert.equal(s.get('ocs_capacity_allocatable_memory_bytes'), 4 * GiB);
  assert.equal(s.get('ocs_capacity_used_memory_bytes'), 256 * MiB);
  assert.equal(s.get('ocs_capacity_allocatable_storage_bytes'), 10 * GiB);
  assert.equal(s.get('ocs_capacity_used_storage_bytes'), 64 * MiB);
});

test("Node.js process metrics carry prom-client's stock names, not our prefix", async () => {
  const text = await metrics().registry.metrics();
  const s = samples(text);
  for (const name of [
    'process_cpu_user_seconds_total',
    'process_resident_memory_bytes',
    'process_start_time_seconds',
    'nodejs_eventloop_lag_seconds',
    'nodejs_heap_size_used_bytes',
  ])
    assert.ok(s.has(name), `${name} is missing`);
  assert.deepEqual(
    text.split('\n').filter((l) => /^(# (HELP|TYPE) )?ocs_node_/.test(l)),
    [],
    'no ocs_node_ prefix',
  );
});
