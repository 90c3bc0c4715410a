import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bridgeName } from '../podman/names.js';
import { NetworkFirewall, tableFingerprints } from './firewall.js';

/** A listing like `nft -j list ruleset`'s, of the node's table, a space's, and another family's. */
function ruleset(o: { packets?: number; handle?: number; ruled?: string[]; allowed?: string[]; rules?: number } = {}) {
  const rule = (chain: string, n: number) => ({
    rule: {
      family: 'inet',
      table: chain === 'output' ? 'ocs' : 'ocs_sp_a',
      chain,
      handle: (o.handle ?? 10) + n,
      expr: [
        { match: { op: '==', left: { meta: { key: 'skuid' } }, right: 5 + n } },
        { counter: { packets: o.packets ?? 0, bytes: (o.packets ?? 0) * 60 } },
        { drop: null },
      ],
    },
  });
  return JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6', json_schema_version: 1 } },
      { table: { family: 'inet', name: 'ocs', handle: o.handle ?? 1 } },
      { set: { family: 'inet', name: 'ruled', table: 'ocs', type: 'ifname', handle: 2, elem: o.ruled ?? ['ocsbr0'] } },
      { set: { family: 'inet', name: 'conns_out', table: 'ocs', type: 'ifname', handle: 3, elem: [] } },
      { chain: { family: 'inet', table: 'ocs', name: 'output', handle: o.handle ?? 4, hook: 'output', prio: -10 } },
      rule('output', 0),
      { table: { family: 'inet', name: 'ocs_sp_a', handle: 7 } },
      {
        set: { family: 'inet', name: 'allowed', table: 'ocs_sp_a', type: 'ipv4_addr', elem: o.allowed ?? ['1.2.3.4'] },
      },
      { chain: { family: 'inet', table: 'ocs_sp_a', name: 'from_space', handle: 8 } },
      ...Array.from({ length: o.rules ?? 2 }, (_, n) => rule('from_space', n)),
      { table: { family: 'ip', name: 'nat', handle: 1 } },
    ],
  });
}

test('a fingerprint is of what a table says, not of what it counted or which daemon added a bridge', () => {
  const base = tableFingerprints(ruleset());
  assert.deepEqual([...base.keys()].sort(), ['ocs', 'ocs_sp_a'], 'inet tables only');
  const same = [
    ruleset({ packets: 1234 }),
    ruleset({ handle: 99 }),
    ruleset({ ruled: ['ocsbr0', 'ocsbr1'] }),
    ruleset({ ruled: [] }),
  ];
  for (const listing of same) assert.deepEqual(tableFingerprints(listing), base, listing);
  const changed: [string, string][] = [
    [ruleset({ rules: 1 }), 'ocs_sp_a'], // a rule deleted
    [ruleset({ rules: 0 }), 'ocs_sp_a'], // the chain flushed
    [ruleset({ rules: 3 }), 'ocs_sp_a'], // a rule added
    [ruleset({ allowed: ['0.0.0.0/0'] }), 'ocs_sp_a'], // another destination allowed
  ];
  for (const [listing, table] of changed) {
    const got = tableFingerprints(listing);
    assert.notEqual(got.get(table), base.get(table), listing);
    assert.equal(got.get('ocs'), base.get('ocs'), 'the other table is untouched');
  }
  const swapped = JSON.parse(ruleset()) as { nftables: unknown[] };
  swapped.nftables.push(swapped.nftables.splice(9, 1)[0]);
  assert.notEqual(tableFingerprints(JSON.stringify(swapped)).get('ocs_sp_a'), base.get('ocs_sp_a'), 'rules reordered');
  assert.equal(tableFingerprints(JSON.stringify({ nftables: [] })).size, 0);
});

test('a network the node joins after a reconcile is noticed, and the next reconcile denies it to every space', async () => {
  let networks = ['192.0.2.0/24'];
  const scripts: string[] = [];
  const firewall = new NetworkFirewall({
    policy: { denied: ['10.0.0.0/8'], dns: [] },
    nodeNetworks: () => networks,
    // No kernel: every listing is empty, scripts are recorded, and there is no iptables.
    runner: (cmd, args, opts) => {
      if (cmd === 'iptables') return Promise.reject(new Error('no iptables'));
      if (cmd === 'nft' && args[0] === '-f') scripts.push(new TextDecoder().decode(opts?.stdin));
      return Promise.resolve({ stdout: args.includes('list') ? '{"nftables":[]}' : '', stderr: '' });
    },
  });
  const space = {
    spaceId: 'sp_abc',
    bridge: bridgeName('sp_abc'),
    subnet: '10.128.0.0/26',
    egress: { mode: 'all' as const },
    published: [],
  };
  await firewall.reconcile([space]);
  assert.match(scripts.at(-1) ?? '', /ip daddr \{ 10\.0\.0\.0\/8, 192\.0\.2\.0\/24 \} drop/);
  assert.equal(firewall.nodeNetworksChanged(), false);
  networks = ['198.51.100.0/24', '192.0.2.0/24'];
  assert.equal(firewall.nodeNetworksChanged(), true);
  await firewall.reconcile([space]);
  assert.match(scripts.at(-1) ?? '', /ip daddr \{ 10\.0\.0\.0\/8, 192\.0\.2\.0\/24, 198\.51\.100\.0\/24 \} drop/);
  assert.equal(firewall.nodeNetworksChanged(), false);
  networks = ['192.0.2.0/24', '198.51.100.0/24'];
  assert.equal(firewall.nodeNetworksChanged(), false, 'the same networks in another order');
});
