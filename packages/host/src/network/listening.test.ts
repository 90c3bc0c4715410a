import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { hostPortsInUse, parseSocketTable } from './listening.js';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:9C40 0100007F:20FB 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:7531 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
`;
const UDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5 2 0 0
`;

test('the socket tables: TCP listeners (not connections), UDP bound ports, IPv4 and IPv6', () => {
  assert.deepEqual(parseSocketTable(TCP, 'tcp'), [8443, 22], 'the connection from 40000 is no listener');
  assert.deepEqual(parseSocketTable(TCP6, 'tcp'), [30001]);
  assert.deepEqual(parseSocketTable(UDP, 'udp'), [53]);
  assert.deepEqual(parseSocketTable('', 'tcp'), []);
  assert.deepEqual(parseSocketTable('header only\n', 'udp'), []);
});

test('a real listener and a real bound UDP socket are seen; a closed one is not', async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const tcp = (server.address() as { port: number }).port;
  const udp = createSocket('udp6');
  await new Promise<void>((resolve) => udp.bind(0, '::1', resolve));
  const udpPort = udp.address().port;
  try {
    assert.ok((await hostPortsInUse('tcp')).has(tcp), `tcp ${tcp}`);
    assert.ok((await hostPortsInUse('udp')).has(udpPort), `udp ${udpPort}`);
  } finally {
    udp.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  assert.ok(!(await hostPortsInUse('tcp')).has(tcp), 'closed');
});
