/**
 * What an operator's tools see of a real node: metrics by their documented names and units, and
 * log lines that say which process on which host of which node wrote them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { reserveOwned, startTestNode, GiB, MiB } from './harness.js';

test('metrics carry base units and stock process names; every log line carries pid, hostname and the node id', async () => {
  const t = await startTestNode({ total: { cpuMillicores: 4000, memoryBytes: 8 * GiB, storageBytes: 4 * GiB } });
  try {
    const { space, api } = await reserveOwned(
      t,
      { cpuMillicores: 1500, memoryBytes: 128 * MiB, storageBytes: 32 * MiB },
      ['monitor'],
      600,
    );
    // A space process that dies is logged by the supervisor, which got the node's logger.
    await api.call('GET', `${space.apiBase}/status`);
    process.kill(t.node.supervisor.pidOf(space.id)!, 'SIGKILL');
    const aboutSpace = (chunk: string) => chunk.includes(`"spaceId":"${space.id}"`);
    for (let i = 0; i < 100 && !t.logs.some(aboutSpace); i++) await new Promise((r) => setTimeout(r, 50));
    const res = await t.client({ roles: ['monitor'] }).send('GET', '/metrics');
    assert.equal(res.status, 200);
    const text = res.body as string;
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    // The test node has no farmer reserve: allocatable is the total it was given.
    assert.equal(value('ocs_capacity_allocatable_cpu_cores'), 4);
    assert.equal(value('ocs_capacity_used_cpu_cores'), 1.5);
    assert.equal(value('ocs_capacity_allocatable_memory_bytes'), 8 * GiB);
    assert.equal(value('ocs_capacity_used_memory_bytes'), 128 * MiB);
    assert.equal(value('ocs_capacity_used_storage_bytes'), 32 * MiB);
    assert.ok(value('process_resident_memory_bytes') > 0, 'stock process metrics');
    assert.equal(value('ocs_id_overlaps'), 0, "no account of this host holds the node's ids");
    assert.doesNotMatch(text, /^ocs_node_|^ocs_capacity\{/m);

    const lines = t.logs.flatMap((chunk) => chunk.split('\n')).filter(Boolean);
    const records = lines.map((l) => JSON.parse(l) as { msg?: string; spaceId?: string });
    assert.ok(records.some((r) => r.msg === 'node daemon listening'));
    assert.ok(
      records.some((r) => r.spaceId === space.id),
      'a line about the space',
    );
    for (const line of lines) {
      const rec = JSON.parse(line) as { pid?: number; hostname?: string; nodeId?: string };
      assert.deepEqual(
        { pid: rec.pid, hostname: rec.hostname, nodeId: rec.nodeId },
        { pid: process.pid, hostname: hostname(), nodeId: t.node.nodeId },
        line,
      );
    }
  } finally {
    await t.stop();
  }
});
