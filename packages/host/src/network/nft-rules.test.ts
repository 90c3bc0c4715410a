import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOcsError } from '@ocs/protocol';
import { bridgeName } from '../podman/names.js';
import { nodeTableScript, removeSpaceScript, spaceOfTable, spaceTable, spaceTableScript } from './nft-rules.js';
import type { NodeNetworkPolicy, SpaceNetwork } from './types.js';

const policy: NodeNetworkPolicy = { denied: ['10.0.0.0/8'], dns: ['10.0.0.2'] };
const base: SpaceNetwork = {
  spaceId: 'sp_abc',
  bridge: bridgeName('sp_abc'),
  subnet: '10.128.0.0/26',
  egress: { mode: 'none' },
  published: [],
};
const refused = (fn: () => unknown) => assert.throws(fn, (e: unknown) => isOcsError(e) && e.code === 'invalid_request');

test('table names round-trip and nothing else is taken for a space', () => {
  assert.equal(spaceOfTable(spaceTable('sp_abc')), 'sp_abc');
  for (const t of ['ocs', 'ocs_sp_', 'ocs_sp_ABC', 'nat', 'ocs_sp_a;b']) assert.equal(spaceOfTable(t), undefined);
});

test('every value is checked before it is written into a script', () => {
  refused(() => spaceTable('sp_a"; flush ruleset'));
  refused(() => spaceTableScript({ ...base, bridge: 'eth0' }, policy));
  refused(() => spaceTableScript({ ...base, subnet: '10.0.0.0/33' }, policy));
  refused(() =>
    spaceTableScript({ ...base, egress: { mode: 'list', allow: ['1.2.3.4 } ; flush ruleset ; {'] } }, policy),
  );
  refused(() => spaceTableScript({ ...base, egress: { mode: 'all' } }, { ...policy, dns: ['::1'] }));
  const pub = { protocol: 'tcp' as const, hostPort: 30000, address: '10.128.0.2', port: 80 };
  refused(() => spaceTableScript({ ...base, published: [{ ...pub, hostPort: 0 }] }, policy));
  refused(() => spaceTableScript({ ...base, published: [{ ...pub, port: 65536 }] }, policy));
  refused(() => spaceTableScript({ ...base, published: [{ ...pub, address: '10.128.0.2:1' }] }, policy));
  refused(() => spaceTableScript({ ...base, published: [{ ...pub, protocol: 'sctp' as unknown as 'tcp' }] }, policy));
  refused(() => spaceTableScript(base, { ...policy, egressBytesPerSecond: 1.5 }));
  refused(() => nodeTableScript(['ocsbr*']));
  refused(() => removeSpaceScript('sp_abc', 'lo'));
});

test('no egress: no masquerade, no accept beyond replies and the space itself', () => {
  const s = spaceTableScript(base, policy);
  assert.doesNotMatch(s, /masquerade/);
  assert.doesNotMatch(s, /dport 53/);
  const all = spaceTableScript({ ...base, egress: { mode: 'all' } }, policy);
  assert.match(all, /masquerade/);
  // The resolver is let through before the node's denied networks, which come before `accept`.
  assert.ok(all.indexOf('dport 53 accept') < all.indexOf('ip daddr { 10.0.0.0/8 } drop'));
  assert.ok(all.indexOf('ip daddr { 10.0.0.0/8 } drop') < all.indexOf('    accept\n'));
});

test("the space's workload uids send nothing from the host's namespace; uids are checked; local accounts stay off the bridges", () => {
  const uids = [
    { first: 250_123, last: 250_123 },
    { first: 1_000_000_000, last: 1_000_065_535 },
  ];
  const s = spaceTableScript({ ...base, workloadUids: uids }, policy);
  assert.match(
    s,
    /type filter hook output priority filter - 10; policy accept;\n {4}meta skuid \{ 250123, 1000000000-1000065535 \} counter drop/,
  );
  assert.doesNotMatch(spaceTableScript(base, policy), /skuid/, 'no uids, no output chain');
  refused(() => spaceTableScript({ ...base, workloadUids: [{ first: 0, last: 0 }] }, policy));
  refused(() => spaceTableScript({ ...base, workloadUids: [{ first: 5, last: 4 }] }, policy));
  refused(() => spaceTableScript({ ...base, workloadUids: [{ first: 1.5, last: 2 }] }, policy));
  assert.match(nodeTableScript([]), /oifname "ocsbr\*" meta skuid != 0 counter drop/);
});

test("a source not the space's own is dropped before any accept, hairpin through its gateway included", () => {
  const s = spaceTableScript({ ...base, egress: { mode: 'all' } }, policy);
  const chain = s.slice(s.indexOf('chain from_space'), s.indexOf('chain to_space'));
  const spoof = chain.indexOf('ip saddr != 10.128.0.0/26 counter drop');
  assert.ok(spoof > 0, chain);
  assert.ok(chain.indexOf('meta nfproto ipv6 counter drop') < spoof);
  assert.equal(chain.slice(0, spoof).indexOf('accept'), -1, 'no accept before the anti-spoof rule');
  assert.ok(spoof < chain.indexOf(`oifname "${base.bridge}" accept`));
});

test("each space's tracked connections are bounded in the node's table, out and in, with counters; values checked", () => {
  const s = nodeTableScript([base.bridge], { maxConnections: { outbound: 4096, inbound: 2048 } });
  assert.match(s, /set conns_out \{\n {4}type ifname; flags dynamic;\n {2}\}/);
  assert.match(s, /set conns_in \{\n {4}type ifname; flags dynamic;\n {2}\}/);
  assert.match(s, /iifname "ocsbr\*" ct state new add @conns_out \{ iifname ct count over 4096 \} counter drop/);
  assert.match(
    s,
    /oifname "ocsbr\*" ct state new ct status dnat add @conns_in \{ oifname ct count over 2048 \} counter drop/,
  );
  // After the fail-closed rules of the forward chain, so an unruled bridge is dropped uncounted.
  assert.ok(s.indexOf('oifname != @ruled drop') < s.indexOf('@conns_out'));
  assert.doesNotMatch(nodeTableScript([]), /ct count|conns_/, 'no bound asked, none written');
  for (const bad of [0, -1, 1.5, 2 ** 32, Number.NaN])
    refused(() => nodeTableScript([], { maxConnections: { outbound: bad, inbound: 10 } }));
  refused(() => nodeTableScript([], { maxConnections: { outbound: 10, inbound: 0 } }));
});
