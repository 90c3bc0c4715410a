import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkInterfaceInfo } from 'node:os';
import { nodeNetworks } from './node-networks.js';

const v4 = (address: string, cidr: string, internal = false) =>
  ({ address, cidr, family: 'IPv4', internal, netmask: '', mac: '' }) as NetworkInterfaceInfo;

test("the node's networks: each interface's IPv4 network, not loopback, IPv6 or the spaces' bridges", () => {
  assert.deepEqual(
    nodeNetworks({
      lo: [v4('127.0.0.1', '127.0.0.1/8', true)],
      eth0: [
        v4('192.0.2.2', '192.0.2.2/24'),
        { address: 'fd00::2', cidr: 'fd00::2/64', family: 'IPv6', internal: false, netmask: '', mac: '', scopeid: 0 },
      ],
      eth1: [v4('203.0.113.77', '203.0.113.77/28'), v4('198.51.100.9', '198.51.100.9/32')],
      ocsbr0123456789: [v4('10.128.0.1', '10.128.0.1/26')],
      wg0: [v4('192.0.2.9', '192.0.2.9/24')],
    }),
    ['192.0.2.0/24', '203.0.113.64/28', '198.51.100.9/32'],
  );
});
