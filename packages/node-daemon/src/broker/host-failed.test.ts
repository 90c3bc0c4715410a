import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BROKER_OPS, hostFailed, type BrokerOp } from '@ocs/protocol';

/** What `host_failed` said for each operation when the part was guessed from the operation's name. */
const BEFORE: [string, BrokerOp[]][] = [
  ['the host', ['status', 'issuerKeys']],
  ['the storage', ['createVolume', 'listVolumes', 'deleteVolume']],
  [
    'the container engine',
    [
      'loadImage',
      'listImages',
      'deleteImage',
      'createContainer',
      'listContainers',
      'getContainer',
      'startContainer',
      'stopContainer',
      'deleteContainer',
      'containerLogs',
      'containerStats',
    ],
  ],
  ['libvirt/QEMU', ['createVm', 'listVms', 'getVm', 'startVm', 'stopVm', 'deleteVm', 'vmConsole']],
  ["the node's firewall", ['getNetwork', 'setEgress', 'publishPort', 'unpublishPort']],
];

test('host_failed names the part each operation declares, as it did when the part was guessed from the name', () => {
  const seen = BEFORE.flatMap(([, ops]) => ops).sort();
  assert.deepEqual(seen, Object.keys(BROKER_OPS).sort());
  for (const [part, ops] of BEFORE)
    for (const op of ops) {
      const e = hostFailed(op, BROKER_OPS[op].part);
      assert.equal(e.code, 'host_failed');
      assert.equal(e.message, `${part} failed to carry out ${op}; the node's log has the detail`);
      assert.deepEqual(e.details, { op });
    }
});
