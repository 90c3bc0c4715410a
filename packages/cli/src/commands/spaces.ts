/** `ocs space`: reserve, inspect, renew, lock, unlock, rotate, back up, restore, move and destroy spaces. */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { OcsError, parsePublicKey, signDelegation, type Space } from '@ocs/protocol';
import { UsageError, formatBytes, formatDuration, parseCount, parseCpu, parseDuration, parseSize } from '../units.js';
import { adoptArchive, archiveSigners, moveSpace, readArchiveHead, saveArchive } from '@ocs/client';
import { busy, keyValues, print, progressBar, table } from '../output.js';
import type { Context } from '../context.js';
import type { Run } from '../main.js';

const leaseLeft = (s: Space) => formatDuration((Date.parse(s.lease.expiresAt) - Date.now()) / 1000);

function showSpace(s: Space, keyHeld: boolean): string {
  return keyValues([
    ['space', s.id],
    ['state', s.state],
    ['cpu', (s.resources.cpuMillicores / 1000).toFixed(2)],
    ['memory', formatBytes(s.resources.memoryBytes)],
    [
      'storage',
      `${formatBytes(s.resources.storageBytes)} (${s.storage.backend}, ${s.storage.unlocked ? 'unlocked' : 'locked'})`,
    ],
    ['lease', `${s.lease.expiresAt} (${leaseLeft(s)} left)`],
    ['owner', s.ownerFingerprint],
    ['wrapped key', keyHeld ? 'kept here' : 'not on this machine'],
  ]);
}

/** Where `ocs space backup` keeps a backup's wrapped key: beside the archive. */
export function wrappedKeyFile(archive: string): string {
  return `${archive}.key`;
}

/** The wrapped key a backup left beside its archive, if it is there. */
function besideArchive(archive: string): { node: string; wrappedKey: string } | undefined {
  const path = wrappedKeyFile(archive);
  if (!existsSync(path)) return undefined;
  const wrappedKey = readFileSync(path, 'utf8');
  return wrappedKey.includes('BEGIN AGE ENCRYPTED FILE') ? { node: '', wrappedKey } : undefined;
}

function wrappedKeyOf(ctx: Context, spaceId: string): string {
  // Under this node, else under another: a space a drain or an orchestrator moved keeps its id
  // and its wrapped key, and ocs kept that under the node it was reserved on.
  const e = heldWrappedKey(ctx, ctx.node().name, spaceId);
  if (!e)
    throw new UsageError(
      `no wrapped key for ${spaceId} here (it stays where the space was reserved; ocs space key import)`,
    );
  return e.wrappedKey;
}

/**
 * The wrapped key of `spaceId` kept here: under the node the CLI talks to first, else under any
 * other node (an archive may come from another node than the one it is restored on).
 */
function heldWrappedKey(ctx: Context, node: string, spaceId: string): { node: string; wrappedKey: string } | undefined {
  const names = [
    node,
    ...ctx.store
      .nodes()
      .nodes.map((n) => n.name)
      .filter((n) => n !== node),
  ];
  for (const n of names) {
    const e = ctx.store.space(n, spaceId);
    if (e) return { node: n, wrappedKey: e.wrappedKey };
  }
  return undefined;
}

export function spaceCommands(program: Command, run: Run): void {
  const space = program.command('space').description('spaces: reservations of CPU, memory and encrypted storage');
  space
    .command('reserve')
    .description('reserve a space bound to your key; its wrapped key is kept here (0600)')
    .requiredOption('--cpu <n>', 'CPUs: 2, 0.5 or 500m')
    .requiredOption('--memory <size>', 'memory, e.g. 4GiB')
    .requiredOption('--storage <size>', 'encrypted storage, e.g. 20GiB')
    .option('--pids <n>', 'processes at most')
    .option('--ports <n>', "ports of the node it may publish at once (from the farmer's range)")
    .option('--lease <duration>', 'lease, e.g. 24h (renew before it ends)', '24h')
    .option('--name <name>', 'a name for the space')
    .option('--idempotency-key <key>', 'the same key again (within a day) returns the same space, never a second')
    .option('--no-use', 'do not make it the current space')
    .action(
      run(
        async (
          ctx,
          o: {
            cpu: string;
            memory: string;
            storage: string;
            pids?: string;
            ports?: string;
            lease: string;
            name?: string;
            idempotencyKey?: string;
            use: boolean;
          },
        ) => {
          const node = ctx.node().name;
          const c = ctx.client({ owner: true });
          const { space: s, wrappedKey } = await busy(
            'reserving',
            c.spaces.reserve(
              {
                resources: {
                  cpuMillicores: parseCpu(o.cpu),
                  memoryBytes: parseSize(o.memory, 'memory'),
                  storageBytes: parseSize(o.storage, 'storage'),
                  ...(o.pids ? { pids: Number(o.pids) } : {}),
                  ...(o.ports ? { ports: parseCount(o.ports, '--ports') } : {}),
                },
                leaseSeconds: parseDuration(o.lease, 'lease'),
                ...(o.name ? { name: o.name } : {}),
              },
              o.idempotencyKey ? { idempotencyKey: o.idempotencyKey } : {},
            ),
          );
          ctx.store.putSpace({ spaceId: s.id, node, wrappedKey, reservedAt: new Date().toISOString() });
          if (o.use) ctx.store.use(node, s.id);
          print(
            ctx.out,
            s,
            () =>
              `${showSpace(s, true)}${o.use ? `\n\nocs commands now act on ${s.id} (ocs space use to change)` : ''}`,
          );
        },
      ),
    );
  space
    .command('ls')
    .description('your spaces on the node (all of them, for a farmer or monitor)')
    .action(
      run(async (ctx) => {
        const node = ctx.node().name;
        const { spaces } = await ctx.client().spaces.list();
        const held = new Set(ctx.store.spaces(node).map((e) => e.spaceId));
        const cur = ctx.store.current();
        print(ctx.out, { spaces }, () =>
          table(
            ['', 'SPACE', 'STATE', 'CPU', 'MEMORY', 'STORAGE', 'LEASE LEFT', 'KEY'],
            spaces.map((s) => [
              cur?.node === node && cur.spaceId === s.id ? '*' : '',
              s.id,
              s.state,
              (s.resources.cpuMillicores / 1000).toFixed(2),
              formatBytes(s.resources.memoryBytes),
              formatBytes(s.resources.storageBytes),
              leaseLeft(s),
              held.has(s.id) ? 'here' : '-',
            ]),
            'no spaces: ocs space reserve --cpu 1 --memory 1GiB --storage 4GiB',
          ),
        );
      }),
    );
  space
    .command('show [id]')
    .description('one space (default: the current one)')
    .action(
      run(async (ctx, id?: string) => {
        const spaceId = id ?? ctx.space().spaceId;
        const s = await ctx.client().spaces.get(spaceId);
        print(ctx.out, s, () => showSpace(s, ctx.store.space(ctx.node().name, spaceId) !== undefined));
      }),
    );
  space
    .command('use <id>')
    .description('make a space the current one for in-space commands')
    .action(
      run(async (ctx, id: string) => {
        const node = ctx.node().name;
        await ctx.client().spaces.get(id);
        ctx.store.use(node, id);
        print(ctx.out, { node, spaceId: id }, () => `ocs commands now act on ${id}`);
      }),
    );
  space
    .command('renew [id]')
    .description('extend the lease (never shortens it)')
    .requiredOption('--lease <duration>', 'the lease from now, e.g. 24h')
    .action(
      run(async (ctx, id: string | undefined, o: { lease: string }) => {
        const s = await ctx
          .client({ owner: true })
          .spaces.renew(id ?? ctx.space().spaceId, parseDuration(o.lease, 'lease'));
        print(ctx.out, s, () => `${s.id}: lease until ${s.lease.expiresAt} (${leaseLeft(s)})`);
      }),
    );
  space
    .command('lock [id]')
    .description('stop its workloads and evict its key: its data is unreadable until unlock')
    .action(
      run(async (ctx, id?: string) => {
        const s = await busy('locking', ctx.client({ owner: true }).spaces.lock(id ?? ctx.space().spaceId));
        print(ctx.out, s, () => `${s.id}: ${s.state}`);
      }),
    );
  space
    .command('unlock [id]')
    .description('open the wrapped key with your key and seal it to the node (in memory only)')
    .action(
      run(async (ctx, id?: string) => {
        const spaceId = id ?? ctx.space().spaceId;
        const s = await busy(
          'unlocking',
          ctx.client({ owner: true }).spaces.unlock(spaceId, wrappedKeyOf(ctx, spaceId)),
        );
        print(ctx.out, s, () => `${s.id}: ${s.state}`);
      }),
    );
  space
    .command('rotate-key [id]')
    .description("re-encrypt the space's storage key under a fresh key; the new wrapped key replaces the old here")
    .action(
      run(async (ctx, id?: string) => {
        const spaceId = id ?? ctx.space().spaceId;
        const node = ctx.node().name;
        const { wrappedKey } = await ctx.client({ owner: true }).spaces.rotateKey(spaceId, wrappedKeyOf(ctx, spaceId));
        ctx.store.putSpace({ spaceId, node, wrappedKey, reservedAt: ctx.store.space(node, spaceId)!.reservedAt });
        print(
          ctx.out,
          { spaceId, rotated: true },
          () => `${spaceId}: key rotated; the old wrapped key no longer opens it`,
        );
      }),
    );
  space
    .command('destroy <id>')
    .description('destroy the space and shred its keys (irreversible)')
    .action(
      run(async (ctx, id: string) => {
        const node = ctx.node().name;
        await busy('destroying', ctx.client({ owner: true }).spaces.destroy(id));
        ctx.store.forgetSpace(node, id);
        print(ctx.out, { destroyed: id }, () => `${id}: destroyed`);
      }),
    );
  space
    .command('backup [id]')
    .description("write the space's storage, as ciphertext, to an archive signed with your key")
    .requiredOption('-o, --output <file>', 'the archive to write (a new file)')
    .action(
      run(async (ctx, id: string | undefined, o: { output: string }) => {
        const spaceId = id ?? ctx.space().spaceId;
        if (existsSync(o.output)) throw new UsageError(`${o.output} exists: an archive is written to a new file`);
        if (existsSync(wrappedKeyFile(o.output)))
          throw new UsageError(`${wrappedKeyFile(o.output)} exists: a backup's wrapped key is written to a new file`);
        const wrappedKey = wrappedKeyOf(ctx, spaceId);
        const client = ctx.client({ owner: true });
        // fscrypt copies a space only at rest: a running one is locked for the copy, and said so.
        const wasActive = (await client.spaces.get(spaceId)).state === 'active';
        if (wasActive) {
          process.stderr.write(`${spaceId}: locked for the copy (a space's storage is copied only at rest)\n`);
          await busy('locking', client.spaces.lock(spaceId));
        }
        const started = Date.now();
        const bar = progressBar('backup');
        let saved;
        try {
          saved = await saveArchive(await client.spaces.export(spaceId), o.output, ctx.ownerKey(), (n, total) =>
            bar.update(n, total),
          );
        } finally {
          bar.done();
          if (wasActive) await busy('unlocking', client.spaces.unlock(spaceId, wrappedKey));
        }
        // Beside it, the wrapped key that opens it (encrypted to your key: it opens nothing
        // without your private key), so the backup outlives the space and its key's entry here.
        writeFileSync(wrappedKeyFile(saved.file), wrappedKey, { mode: 0o600, flag: 'wx' });
        const result = {
          spaceId,
          file: saved.file,
          wrappedKeyFile: wrappedKeyFile(saved.file),
          bytes: saved.bytes,
          // A ZFS space's send stream is as long as what arrived; an fscrypt image has its size.
          imageBytes: saved.head.backend === 'zfs' ? saved.tail.dataBytes : saved.head.image.bytes,
          chunks: saved.tail.chunks,
          seconds: (Date.now() - started) / 1000,
          unlockedAgain: wasActive,
        };
        print(
          ctx.out,
          result,
          () =>
            `${spaceId}: ${formatBytes(saved.bytes)} written to ${saved.file} ` +
            `(its ${formatBytes(result.imageBytes)} ${saved.head.backend === 'zfs' ? 'raw send stream' : 'image'} as ciphertext; signed with your key)` +
            (wasActive ? '; unlocked again' : '') +
            `\nits wrapped key (only your key opens it): ${wrappedKeyFile(saved.file)}`,
        );
      }),
    );
  space
    .command('delegate [id]')
    .description(
      'let the space move without you: to the nodes named (a drain takes it there), or by the orchestrators whose keys are named, until the time given; never to open it',
    )
    .option('--to <node...>', 'nodes that may receive it (ocs node add): a drain moves it to the first that takes it')
    .option('--orchestrator <key...>', 'public keys of orchestrators that may move it (any form ocs key reads)')
    .option('--for <duration>', 'how long the delegation holds (at most 366d)', '30d')
    .option('--revoke', 'forget the delegation: from now on only your key moves the space')
    .action(
      run(
        async (
          ctx,
          id: string | undefined,
          o: { to?: string[]; orchestrator?: string[]; for: string; revoke?: boolean },
        ) => {
          const spaceId = id ?? ctx.space().spaceId;
          const client = ctx.client({ owner: true });
          if (o.revoke) {
            await client.spaces.revokeDelegation(spaceId);
            print(ctx.out, { spaceId, delegation: null }, () => `${spaceId}: no delegation; only your key moves it`);
            return;
          }
          if (!o.to?.length && !o.orchestrator?.length)
            throw new UsageError('name at least one --to node or --orchestrator (or --revoke)');
          const seconds = parseDuration(o.for, 'for');
          const space = await client.spaces.get(spaceId);
          const now = Date.now();
          const owner = ctx.ownerKey();
          let delegation: string;
          try {
            delegation = signDelegation(owner, {
              v: 1,
              spaceId,
              org: space.org,
              ownerKey: owner.publicKey.toBase64url(),
              nodes: (o.to ?? []).map((n) => {
                const e = ctx.node(n);
                return { url: e.url, fingerprint: e.fingerprint };
              }),
              orchestrators: (o.orchestrator ?? []).map((k) => parsePublicKey(k).toBase64url()),
              issuedAt: new Date(now).toISOString(),
              notAfter: new Date(now + seconds * 1000).toISOString(),
            });
          } finally {
            owner.destroy();
          }
          const s = await client.spaces.delegate(spaceId, delegation);
          print(
            ctx.out,
            { spaceId, delegation: s.delegation },
            () =>
              `${spaceId}: may move without you until ${s.delegation!.notAfter}` +
              (o.to?.length ? `\n  to nodes: ${o.to.join(', ')}` : '') +
              (o.orchestrator?.length
                ? `\n  by orchestrators: ${s.delegation!.orchestrators.map((k) => parsePublicKey(k).fingerprint()).join(', ')}`
                : ''),
          );
        },
      ),
    );
  space
    .command('move [id]')
    .description(
      'move the space to another node, node to node, as ciphertext: it keeps its id and key, waits there locked, and leaves nothing here but a tombstone',
    )
    .requiredOption('--to <node>', 'the node to move it to (ocs node add)')
    .option('--to-token-file <file>', "a token for that node, if it is not the same as this node's")
    .option('--to-url <url>', "the node's URL as this node reaches it (default: the one ocs uses)")
    .action(
      run(async (ctx, id: string | undefined, o: { to: string; toTokenFile?: string; toUrl?: string }) => {
        const spaceId = id ?? ctx.space().spaceId;
        const from = ctx.node().name;
        const to = ctx.node(o.to).name;
        if (to === from) throw new UsageError(`the space is on ${from} already`);
        const wrappedKey = wrappedKeyOf(ctx, spaceId);
        const started = Date.now();
        const tombstone = await busy(
          `moving to ${to}`,
          moveSpace(
            ctx.client({ owner: true }),
            ctx.client({ owner: true, node: to, ...(o.toTokenFile ? { tokenFile: o.toTokenFile } : {}) }),
            spaceId,
            o.toUrl ? { targetUrl: o.toUrl } : {},
          ),
        );
        // The same wrapped key opens it there: kept under the node it is on now, and the current
        // space (if it was this one) follows it.
        const wasCurrent = ctx.store.current()?.spaceId === spaceId;
        ctx.store.putSpace({ spaceId, node: to, wrappedKey, reservedAt: ctx.store.space(from, spaceId)!.reservedAt });
        ctx.store.forgetSpace(from, spaceId);
        if (wasCurrent) ctx.store.use(to, spaceId);
        print(
          ctx.out,
          { tombstone, seconds: (Date.now() - started) / 1000 },
          () =>
            `${spaceId}: moved to ${to} (${tombstone.to?.url ?? ''}) in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
            `it waits there locked\nopen it: ocs --node ${to} space unlock ${spaceId}`,
        );
      }),
    );
  space
    .command('restore <file>')
    .description(
      'restore a backup (ocs space backup) as a new space, locked: a fork that opens with the wrapped key of the space backed up',
    )
    .option('--lease <duration>', "the new space's lease, e.g. 24h", '24h')
    .option('--name <name>', 'a name for the new space')
    .option('--no-use', 'do not make it the current space')
    .action(
      run(async (ctx, file: string, o: { lease: string; name?: string; use: boolean }) => {
        const leaseSeconds = parseDuration(o.lease, 'lease');
        let isFile = false;
        try {
          isFile = statSync(file).isFile();
        } catch {
          // said below
        }
        if (!isFile) throw new UsageError(`${file} is not a readable file`);
        // The head says which space it is of and whose: checked here before a byte is sent.
        const head = await readArchiveHead(file);
        const me = ctx.ownerKey();
        const mine = me.publicKey.toBase64url();
        try {
          if (head.ownerKey !== mine)
            throw new OcsError(
              'not_owner',
              `the archive is of a space bound to another key (${parsePublicKey(head.ownerKey).fingerprint()}): only its owner restores it`,
            );
          // An archive the owner did not take (a drained node's export): checked whole here,
          // then signed with the owner's key, which is what a node restoring it asks for.
          if (!(await archiveSigners(file)).some((x) => x.by === 'owner' && x.publicKey === mine)) {
            const adopted = await adoptArchive(file, me);
            process.stderr.write(
              `${basename(file)}: checked (every chunk) and signed with your key; it was signed by node ` +
                `${adopted.nodes.map((k) => parsePublicKey(k).fingerprint()).join(', ') || '(none)'}\n`,
            );
          }
        } finally {
          me.destroy();
        }
        const node = ctx.node().name;
        const held = heldWrappedKey(ctx, node, head.spaceId) ?? besideArchive(file);
        const bar = progressBar(`restore ${basename(file)}`);
        let s: Space;
        try {
          s = await ctx
            .client({ owner: true })
            .spaces.restore(
              file,
              { leaseSeconds, ...(o.name ? { name: o.name } : {}) },
              { onProgress: (n, total) => bar.update(n, total) },
            );
        } finally {
          bar.done();
        }
        // The fork opens with the archived space's key: kept here under the new id too.
        if (held)
          ctx.store.putSpace({
            spaceId: s.id,
            node,
            wrappedKey: held.wrappedKey,
            reservedAt: new Date().toISOString(),
          });
        if (o.use) ctx.store.use(node, s.id);
        const next = held
          ? `open it: ocs space unlock ${s.id}`
          : `no wrapped key of ${head.spaceId} here or in ${wrappedKeyFile(file)}, and only it opens the new space: bring it from where ` +
            `${head.spaceId} was reserved (there: ocs space key export ${head.spaceId} > key.age), then: ` +
            `ocs space key import ${s.id} key.age && ocs space unlock ${s.id}`;
        print(
          ctx.out,
          { space: s, restoredFrom: head.spaceId, wrappedKeyKept: held !== undefined },
          () =>
            `${showSpace(s, held !== undefined)}\n\n` +
            `restored from ${head.spaceId} (a fork: a new space, its workloads get new ids)` +
            `${o.use ? `\nocs commands now act on ${s.id} (ocs space use to change)` : ''}\n${next}`,
        );
      }),
    );
  const key = space.command('key').description("a space's wrapped key (encrypted to your key)");
  key
    .command('export [id]')
    .description("print the wrapped key (for an orchestrator's records; only your private key opens it)")
    .action(
      run(async (ctx, id?: string) => {
        const spaceId = id ?? ctx.space().spaceId;
        const wrappedKey = wrappedKeyOf(ctx, spaceId);
        print(ctx.out, { spaceId, wrappedKey }, () => wrappedKey.trimEnd());
      }),
    );
  key
    .command('import <id> <file>')
    .description('keep a wrapped key exported elsewhere, to unlock the space from here')
    .action(
      run(async (ctx, id: string, file: string) => {
        const wrappedKey = readFileSync(file, 'utf8');
        if (!wrappedKey.includes('BEGIN AGE ENCRYPTED FILE'))
          throw new UsageError(`${file} is not an armored age file`);
        ctx.store.putSpace({ spaceId: id, node: ctx.node().name, wrappedKey, reservedAt: new Date().toISOString() });
        print(ctx.out, { spaceId: id, imported: true }, () => `${id}: wrapped key kept`);
      }),
    );
}
