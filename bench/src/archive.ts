/**
 * bench/archive: a backup of a space holding 1 GiB (`BENCH_ARCHIVE_MIB`) of data, through the
 * daemon (`GET …/archive`, chunked, digested, checked and signed by the client as it arrives,
 * written to a file), against copying the same ciphertext over the same transport in the same
 * run: the same image file streamed by a bare HTTPS server with the node's certificate to a
 * client that writes it to a file. Also the pause a backup of a running space costs its owner
 * (lock, export, unlock: what `ocs space backup` does). Goal: ratio ours / plain copy >= 0.8.
 *
 * Then the way back: a restore of that archive (`POST /v1/spaces/restore`: every chunk checked
 * and written into a new space's image, the owner's signature checked, the image's filesystem
 * checked by e2fsck in its sandbox), against uploading the same archive file over the same
 * transport to a bare HTTPS server with the node's certificate that writes it to a file beside
 * the node's images.
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execFileSync } from 'node:child_process';
import { unwrapKey, type Space } from '@ocs/protocol';
import { saveArchive } from '@ocs/client';
import { lockSpace, startTestNode, reserveOwned, MiB } from '@ocs/e2e/harness';
import { report } from './measure.js';

const DATA_MIB = Number(process.env.BENCH_ARCHIVE_MIB ?? 1024);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

const t = await startTestNode({
  total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 4 * 1024 * MiB },
});
const dir = mkdtempSync(join(tmpdir(), 'ocs-bench-archive-'));
let plain: Server | undefined;
let upload: Server | undefined;
try {
  // Room for the data and ext4's own: the image is about as large as what it holds.
  const storageBytes = Math.ceil((DATA_MIB * 1.08 + 32) / 4) * 4 * MiB;
  const { owner, space, wrappedKey, api } = await reserveOwned(
    t,
    { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes },
    ['spaces', 'storage'],
  );
  const info = await t.storage.info(space.id);
  for (let i = 0; i < DATA_MIB / 64; i++) writeFileSync(join(info.mountpoint, `data-${i}`), randomBytes(64 * MiB));
  execFileSync('sync');
  await lockSpace(api, space.id);
  const image = join(t.config.storage.root, 'images', `${space.id}.img`);
  const imageBytes = statSync(image).size;

  // The plain copy: the image file, as it is, over HTTPS with the node's certificate.
  plain = createServer({ key: t.node.tls.key, cert: t.node.tls.cert }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(imageBytes) });
    createReadStream(image).pipe(res);
  });
  await new Promise<void>((r) => plain!.listen(0, '127.0.0.1', r));
  const port = (plain.address() as { port: number }).port;
  const plainCopy = async (file: string) =>
    new Promise<void>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false }, (res) => {
        pipeline(res, createWriteStream(file)).then(resolve, reject);
      })
        .on('error', reject)
        .end();
    });

  const ours: number[] = [];
  const base: number[] = [];
  let archiveBytes = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const b = join(dir, `plain-${round}`);
    let t0 = process.hrtime.bigint();
    await plainCopy(b);
    base.push(seconds(t0));
    rmSync(b);
    const o = join(dir, `archive-${round}.ocsa`);
    t0 = process.hrtime.bigint();
    archiveBytes = (await saveArchive(await api.spaces.export(space.id), o, owner)).bytes;
    ours.push(seconds(t0));
    rmSync(o);
  }

  // The way back: a restore of the archive, against a plain upload of the same file.
  const archive = join(dir, 'restore-from.ocsa');
  await saveArchive(await api.spaces.export(space.id), archive, owner);
  const sink = join(t.config.storage.root, 'images', 'bench-plain-upload');
  upload = createServer({ key: t.node.tls.key, cert: t.node.tls.cert }, (req, res) => {
    pipeline(req, createWriteStream(sink)).then(
      () => res.writeHead(201).end(),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((r) => upload!.listen(0, '127.0.0.1', r));
  const uploadPort = (upload.address() as { port: number }).port;
  const plainUpload = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: uploadPort,
          path: '/',
          method: 'POST',
          rejectUnauthorized: false,
          headers: { 'content-length': String(statSync(archive).size) },
        },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      ).on('error', reject);
      createReadStream(archive).pipe(req);
    });
  const restoreOurs: number[] = [];
  const restoreBase: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    let t0 = process.hrtime.bigint();
    await plainUpload();
    restoreBase.push(seconds(t0));
    rmSync(sink);
    t0 = process.hrtime.bigint();
    const fork = await api.spaces.restore(archive, { leaseSeconds: 3600 });
    restoreOurs.push(seconds(t0));
    await api.call('DELETE', `/v1/spaces/${fork.id}`);
  }

  // A backup of the running space, as `ocs space backup` does it: the time the space is locked.
  const key = await unwrapKey(wrappedKey, owner);
  await api.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  const t0 = process.hrtime.bigint();
  await lockSpace(api, space.id);
  await saveArchive(await api.spaces.export(space.id), join(dir, 'live.ocsa'), owner);
  await api.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  const pause = seconds(t0);

  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  const mibs = (bytes: number, s: number) => bytes / MiB / s;
  report('archive', {
    'data in the space MiB': DATA_MIB,
    'image MiB': imageBytes / MiB,
    'archive MiB': archiveBytes / MiB,
    rounds: ROUNDS,
    'plain copy of the image, s (median)': median(base),
    'backup through the daemon, s (median)': median(ours),
    'plain copy MiB/s': mibs(imageBytes, median(base)),
    'backup MiB/s (of the image)': mibs(imageBytes, median(ours)),
    'ratio ours / plain copy (throughput)': median(base) / median(ours),
    'pause of a running space for a backup, s': pause,
    'plain upload of the archive, s (median)': median(restoreBase),
    'restore through the daemon, s (median)': median(restoreOurs),
    'restore MiB/s (of the image)': mibs(imageBytes, median(restoreOurs)),
    'restore ratio ours / plain upload (throughput)': median(restoreBase) / median(restoreOurs),
    goal: 'ratio >= 0.8 (backup)',
    'goal met': median(base) / median(ours) >= 0.8,
  });
} finally {
  plain?.close();
  upload?.close();
  rmSync(dir, { recursive: true, force: true });
  await t.stop();
}
