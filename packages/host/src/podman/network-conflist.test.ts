import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OcsError } from '@ocs/protocol';
import { bridgeName, networkName } from './names.js';
import { VM_ADDRESSES, spaceNetworkConflist, spaceSubnet } from './network-conflist.js';

test("a space's /26: the gateway first, containers below, the top 16 kept for VMs", () => {
  assert.deepEqual(spaceSubnet('10.128.0.64/26'), {
    subnet: '10.128.0.64/26',
    prefix: 26,
    gateway: '10.128.0.65',
    containers: { first: '10.128.0.66', last: '10.128.0.110' },
    vms: { first: '10.128.0.111', last: '10.128.0.126' },
  });
  assert.equal(VM_ADDRESSES, 16);
  for (const bad of ['10.128.0.65/26', '10.128.0.0/27', '10.128.0.0', '300.1.1.0/24', '10.0.0.0/8'])
    assert.throws(() => spaceSubnet(bad), OcsError, bad);
});

test('the conflist: the bridge plugin only, on the space bridge, no masquerade, the daemon-chosen ranges', () => {
  const id = 'sp_abcdefghij0123456789';
  const c = spaceNetworkConflist(id, '10.128.1.0/26') as {
    name: string;
    plugins: { type: string; bridge: string; isGateway: boolean; ipMasq: boolean; ipam: { ranges: unknown } }[];
    args: unknown;
  };
  assert.equal(c.name, networkName(id));
  assert.deepEqual(
    c.plugins.map((p) => p.type),
    ['bridge'],
    'no portmap, firewall or tuning plugin writes rules beside ours',
  );
  const [bridge] = c.plugins;
  assert.equal(bridge?.bridge, bridgeName(id));
  assert.equal(bridge?.isGateway, true);
  assert.equal(bridge?.ipMasq, false);
  assert.deepEqual(bridge?.ipam.ranges, [
    [{ subnet: '10.128.1.0/26', gateway: '10.128.1.1', rangeStart: '10.128.1.2', rangeEnd: '10.128.1.46' }],
  ]);
  assert.deepEqual(c.args, { podman_labels: { 'ocs.space': id } });
  assert.throws(() => spaceNetworkConflist('not-a-space', '10.128.1.0/26'), OcsError);
});
