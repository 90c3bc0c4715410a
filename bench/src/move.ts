/**
 * bench/move: moving a space holding 1 GiB (`BENCH_MOVE_MIB`) of data between two real daemons
 * on this machine (node to node: the source locks it, streams its archive to the target, which
 * checks every chunk, the source's signature and the image's filesystem, then commits), against
 * copying the same ciphertext over the same transport in the same run: the space's image file
 * streamed over HTTPS, with the target's certificate, to a bare server that writes it beside the
 * target's images. Rounds go A → B and back. Also the time the space is unavailable: from the
 * move's start (the space running) until it runs again, unlocked on the target, and that minus
 * the copy. Goal: ratio plain copy / move >= 0.8.
 */
import { createReadStream, createWriteStream, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execFileSync } from 'node:child_process';
import { generatePrivateKey, type CreateSpaceResponse } from '@ocs/protocol';
import { moveSpace } from '@ocs/client';
import { twoNodes, type Node } from '@ocs/e2e/two-nodes';
import { report } from './measure.js';

const MiB = 1024 ** 2;
const DATA_MIB = Number(process.env.BENCH_MOVE_MIB ?? 1024);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

const owner = generatePrivateKey();
const nodes = await twoNodes(['bma', 'bmb'], owner, 'org-bench', ['spaces', 'storage']);
const servers: Server[] = [];
try {
  const { a, b } = nodes;
  // Room for the data and ext4's own: the image is about as large as what it holds.
  const storageBytes = Math.ceil((DATA_MIB * 1.08 + 32) / 4) * 4 * MiB;
  const made = await a.client.call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toBase64url(),
    resources: { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes },
    leaseSeconds: 3600,
  });
  const id = made.body.space.id;
  nodes.spaces.add(id);
  const data = join(a.config.storage.root, 'mnt', id, 'data');
  for (let i = 0; i < DATA_MIB / 64; i++) writeFileSync(join(data, `bench-${i}`), randomBytes(64 * MiB));
  execFileSync('sync');

  /** The plain copy to `to`: the image file on `from`, as it is, over HTTPS with `to`'s certificate. */
  const sinkOn = (to: Node) => {
    const cert = readFileSync(join(to.config.stateDir, 'tls', 'cert.pem'));
    const key = readFileSync(join(to.config.stateDir, 'tls', 'key.pem'));
    const sink = join(to.config.storage.root, 'images', 'bench-plain-copy');
    const server = createServer({ key, cert }, (req, res) => {
      pipeline(req, createWriteStream(sink)).then(
        () => res.writeHead(201).end(),
        () => res.writeHead(500).end(),
      );
    });
    servers.push(server);
    return { server, sink };
  };
  const plainCopy = async (from: Node, to: Node) => {
    const image = join(from.config.storage.root, 'images', `${id}.img`);
    const { server, sink } = sinkOn(to);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: '/',
          method: 'POST',
          rejectUnauthorized: false,
          headers: { 'content-length': String(statSync(image).size) },
        },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      ).on('error', reject);
      createReadStream(image).pipe(req);
    });
    const s = seconds(t0);
    server.close();
    rmSync(sink, { force: true });
    return s;
  };

  const plain: number[] = [];
  const moves: number[] = [];
  const unavailable: number[] = [];
  let imageBytes = 0;
  let [from, to] = [a, b];
  for (let round = 0; round < ROUNDS; round++) {
    // The baseline needs the image at rest: the space locked for it, and running again before the move.
    await from.client.spaces.lock(id);
    imageBytes = statSync(join(from.config.storage.root, 'images', `${id}.img`)).size;
    plain.push(await plainCopy(from, to));
    await from.client.spaces.unlock(id, made.body.wrappedKey);

    const t0 = process.hrtime.bigint();
    await moveSpace(from.client, to.client, id);
    moves.push(seconds(t0));
    await to.client.spaces.unlock(id, made.body.wrappedKey);
    unavailable.push(seconds(t0));
    [from, to] = [to, from];
  }
  const mibs = (s: number) => imageBytes / MiB / s;
  report('move', {
    'data in the space MiB': DATA_MIB,
    'image MiB': imageBytes / MiB,
    rounds: ROUNDS,
    'plain copy of the image to the target, s (median)': median(plain),
    'move node to node, s (median)': median(moves),
    'plain copy MiB/s': mibs(median(plain)),
    'move MiB/s (of the image)': mibs(median(moves)),
    'ratio plain copy / move (throughput)': median(plain) / median(moves),
    'unavailable: running on the source to running on the target, s (median)': median(unavailable),
    'unavailable minus the plain copy, s': median(unavailable) - median(plain),
    goal: 'ratio >= 0.8; unavailable minus copy < 2 s',
    'goal met': median(plain) / median(moves) >= 0.8,
  });
} finally {
  for (const s of servers) s.close();
  await nodes.close();
}
