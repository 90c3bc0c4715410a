/**
 * bench/network: what a published port costs. A client namespace downloads from, and makes
 * short requests to, a container's server two ways, in alternating rounds of one run:
 *
 * - published: to the node's port, under the node's real rules (the node's table and the space's
 *   table from `NetworkFirewall`, as the daemon makes them): DNAT in prerouting, the space's
 *   forward chains, conntrack;
 * - direct: to the container's own address on its bridge, routed by the same node with no rules
 *   of ours at all (the baseline: the kernel's plain forwarding over the same veths and bridge).
 *
 * The container is what podman makes of one on the data path: a network namespace with a veth on
 * the space's bridge. The namespaces are NetnsLab's, removed at the end.
 *
 * Goal: throughput and requests per second published / direct at least 0.8.
 */
import { bridgeName, DEFAULT_DENIED, NetworkFirewall, type SpaceNetwork } from '@ocs/host';
import { NetnsLab, removeAllTables } from '@ocs/host/testing';
import { percentile, report } from './measure.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const DOWNLOAD_MS = Number(process.env.BENCH_NETWORK_MS ?? 2000);
const REQUESTS = Number(process.env.BENCH_NETWORK_REQUESTS ?? 300);
const GOAL_RATIO = 0.8;
const SPACE = 'sp_benchnetwork';
const CTR = '10.128.0.2';
const NODE = '192.0.2.1';
const HOST_PORT = 30_080;

// Sequential connect, read one line, close: the latency of one short request, and its rate.
const REQUEST_LOOP = `
const net = require('node:net');
const { host, port, n } = JSON.parse(process.argv[1]);
const times = [];
const one = () => new Promise((done, fail) => {
  const t0 = process.hrtime.bigint(); const s = net.connect(port, host); let got = '';
  s.on('data', (d) => { got += d; }); s.on('error', fail);
  s.on('end', () => { times.push(Number(process.hrtime.bigint() - t0) / 1e6); done(got); });
});
(async () => { for (let i = 0; i < n; i++) await one(); process.stdout.write(JSON.stringify(times)); })();
`;

const lab = new NetnsLab();
const space: SpaceNetwork = {
  spaceId: SPACE,
  bridge: bridgeName(SPACE),
  subnet: '10.128.0.0/26',
  egress: { mode: 'none' },
  published: [
    { protocol: 'tcp', hostPort: HOST_PORT, address: CTR, port: 8080 },
    { protocol: 'tcp', hostPort: HOST_PORT + 1, address: CTR, port: 8081 },
  ],
};

async function requests(host: string, port: number): Promise<number[]> {
  const { stdout } = await lab.exec('client', process.execPath, [
    '-e',
    REQUEST_LOOP,
    JSON.stringify({ host, port, n: REQUESTS }),
  ]);
  return JSON.parse(stdout) as number[];
}

try {
  await lab.host('node');
  await lab.host('client');
  await lab.host('ctr');
  await lab.link(
    { host: 'node', dev: 'farm0', addr: `${NODE}/24` },
    { host: 'client', dev: 'eth0', addr: '192.0.2.2/24' },
  );
  // The direct path needs a route to the space's subnet (a published port does not).
  await lab.ip('client', ['route', 'add', '10.128.0.0/16', 'via', NODE]);
  await lab.bridge('node', space.bridge, '10.128.0.1/26');
  await lab.attach('ctr', 'node', space.bridge, `${CTR}/26`, '10.128.0.1', 'vctr');
  await lab.exec('node', 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  await lab.serve('ctr', 'bulk', { tcp: [8080], bulk: true });
  await lab.serve('ctr', 'web', { tcp: [8081] });
  const fw = new NetworkFirewall({ policy: { denied: [...DEFAULT_DENIED], dns: [] }, prefix: lab.prefix('node') });

  const mbps: Record<'published' | 'direct', number[]> = { published: [], direct: [] };
  const rps: Record<'published' | 'direct', number[]> = { published: [], direct: [] };
  const latency: Record<'published' | 'direct', number[]> = { published: [], direct: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const way of round % 2 === 0 ? (['published', 'direct'] as const) : (['direct', 'published'] as const)) {
      if (way === 'published') await fw.reconcile([space]);
      else await removeAllTables(lab.prefix('node'));
      const [host, bulkPort, webPort] = way === 'published' ? [NODE, HOST_PORT, HOST_PORT + 1] : [CTR, 8080, 8081];
      const bytes = await lab.download('client', { host, port: bulkPort }, DOWNLOAD_MS);
      if (bytes === 0) throw new Error(`no bytes over the ${way} path`);
      mbps[way].push((bytes * 8) / 1e6 / (DOWNLOAD_MS / 1000));
      const times = await requests(host, webPort);
      latency[way].push(...times);
      rps[way].push(times.length / (times.reduce((a, b) => a + b, 0) / 1000));
    }
  }
  const med = (v: number[]) => percentile(v, 50);
  const result = {
    'published Mbit/s (median of rounds)': med(mbps.published),
    'direct Mbit/s (median of rounds)': med(mbps.direct),
    'throughput published / direct': med(mbps.published) / med(mbps.direct),
    'published requests/s (one at a time)': med(rps.published),
    'direct requests/s (one at a time)': med(rps.direct),
    'requests published / direct': med(rps.published) / med(rps.direct),
    'published request p50 ms': percentile(latency.published, 50),
    'direct request p50 ms': percentile(latency.direct, 50),
    'published request p99 ms': percentile(latency.published, 99),
    'direct request p99 ms': percentile(latency.direct, 99),
    rounds: ROUNDS,
    goal: `>= ${GOAL_RATIO} for throughput and requests`,
  };
  report('network', result);
  const ok =
    result['throughput published / direct'] >= GOAL_RATIO && result['requests published / direct'] >= GOAL_RATIO;
  console.log(ok ? 'goal met' : 'GOAL MISSED');
} finally {
  await lab.cleanup();
}
