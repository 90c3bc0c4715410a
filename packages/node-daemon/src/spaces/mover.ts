/**
 * A move's source end: a space leaves this node for another one, node to node, as ciphertext.
 *
 * The owner has opened an import on the target (it names this node's identity key) and asks
 * this node to move the space there. The states, each written before the step it names:
 *
 * - `moving`: the space is locked and its archive streams to the target, signed by this node's
 *   identity key. Anything short of the target keeping it (refused, cut, a crash of either
 *   node) ends the move: the target drops what it got, the space is `locked` here as it was.
 * - `committing`: the target holds it whole and checked (`prepared`) and is told to keep it.
 *   From here the move is never undone by this node alone: the commit is repeated until the
 *   target answers. Answered, the space is the target's; the target answering that it holds no
 *   such import (it expired, or its owner dropped it) is the one way back to `locked`.
 * - the space torn down here, its record a tombstone: where it went, signed by this node.
 *
 * At every moment at most one node can unlock the space: the target only after the commit,
 * this node only before `committing` or after the target said it never had it.
 */
import { Readable } from 'node:stream';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sign as nativeSign, type KeyObject } from 'node:crypto';
import {
  OcsError,
  isOcsError,
  tombstoneSigningInput,
  type HashFactory,
  type ImportState,
  type MoveTarget,
  type PeerImportRequest,
  type Tombstone,
} from '@ocs/protocol';
import { sendsSeeds, type StorageDriver } from '@ocs/host';
import type { Logger } from '../logger.js';
import type { Clock } from '../clock.js';
import type { MoveTo, SpaceRow, SpacesRepo, TombstoneRow } from '../state/index.js';
import type { SpaceService } from './service.js';
import { tombstoneView } from './service.js';
import { spaceArchive, type RecordedHead } from './archive.js';
import { cutOnce, failpoint, isArmed, type Failpoint } from '../failpoints.js';

/** How this node reaches a move's target (the daemon's is `move-client.ts`, over the SDK). */
export interface MoveTransport {
  /** Streams the archive into the target's import; resolves once the target kept it `prepared`. */
  send(to: MoveTo, spaceId: string, archive: () => Readable): Promise<void>;
  /** What the target's import holds (of a seed, above all); throws when it cannot be reached. */
  importState(to: MoveTo, spaceId: string): Promise<ImportState>;
  /** `committed`, or `gone` when the target holds no such import; throws when it cannot be reached. */
  commit(to: MoveTo, spaceId: string): Promise<'committed' | 'gone'>;
  /** Tells the target to drop the import (best effort: an import not committed expires anyway). */
  abort(to: MoveTo, spaceId: string): Promise<void>;
  /** A drain's import: asks a peer node to take the space on its owner's delegation. */
  openPeerImport(to: MoveTarget, req: PeerImportRequest): Promise<void>;
}

export interface MoverDeps {
  service: SpaceService;
  repo: SpacesRepo;
  transport: MoveTransport;
  /** This node's identity key: signs the archive it sends and the tombstone it keeps. */
  identityKey: KeyObject;
  identityPublic: string;
  /** This node's TLS certificate fingerprint (the archive head's `node`). */
  tlsFingerprint: string;
  archiveHead(row: SpaceRow): RecordedHead;
  hashes: HashFactory;
  clock: Clock;
  logger: Logger;
  /** Commit attempts within the owner's request before the rest go on in the background. */
  commitAttempts?: number;
  /** The node's storage: a move of a running space on ZFS sends a seed first (`sendsSeeds`). */
  storage: StorageDriver;
}

const COMMIT_RETRY_MAX_MS = 60_000;
/** Tries of one dataset of a seed whose stream is cut, and the first pause before asking the target where it stopped. */
const SEED_ATTEMPTS = 4;
const SEED_RETRY_MS = 500;
/** As long as a target keeps an import waiting (`IMPORT_WAIT_MS` there). */
const ABORT_RETRY_MS = 3600_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class SpaceMover {
  /** Spaces whose seed is being sent: one move at a time. */
  private readonly seeding = new Set<string>();
  /** Spaces whose commit is being repeated in the background, so one loop runs per space. */
  private readonly committing = new Set<string>();
  /** Aborts still being told to a target, by space: a new move of the space ends them. */
  private readonly aborting = new Map<string, { stop: boolean }>();
  private closed = false;

  constructor(private readonly d: MoverDeps) {}

  /** Moves the space to `to`; answers its tombstone once the target has it. */
  async move(actor: string, id: string, to: MoveTarget): Promise<Tombstone> {
    // An earlier move's abort must not drop the import this one fills.
    const earlier = this.aborting.get(id);
    if (earlier) earlier.stop = true;
    const base = await this.seed(actor, id, to);
    let row: SpaceRow;
    try {
      row = await this.d.service.beginMove(actor, id, to);
    } catch (err) {
      if (base !== undefined) await this.dropSeed(id);
      throw err;
    }
    const moveTo = row.moveTo!;
    failpoint('move.moving');
    try {
      await this.send(actor, row, moveTo, base);
      failpoint('move.sent');
    } catch (err) {
      if (base !== undefined) await this.dropSeed(id);
      await this.abort(actor, id, moveTo, err);
      throw new OcsError('move_aborted', 'the move stopped before its commit: the space is locked here, as it was', {
        reason: isOcsError(err) ? err.message : 'the target could not be reached',
        ...(isOcsError(err) ? { code: err.code } : {}),
      });
    }
    this.d.repo.setMoveState(id, ['moving'], 'committing', moveTo);
    failpoint('move.committing');
    return this.commit(actor, id, moveTo, this.d.commitAttempts ?? 5);
  }

  /**
   * After a restart: a move cut short in `moving` is aborted, one in `committing` goes on
   * committing until the target answers.
   */
  resume(): void {
    for (const row of this.d.repo.list({})) {
      if (!row.moveTo) continue;
      // An export cut short: its partial file goes, the space stays here, locked.
      if (row.state === 'moving' && row.moveTo.archive !== undefined) {
        this.d.service.endMoveAborted('node', row.id, 'moving', new OcsError('unavailable', 'the node restarted'));
        continue;
      }
      if (row.state === 'moving')
        void this.abort('node', row.id, row.moveTo, new OcsError('unavailable', 'the node restarted mid-move'));
      else if (row.state === 'committing') this.commitInBackground('node', row.id, row.moveTo);
    }
  }

  /**
   * At start, before any move: a seed a move left when the node stopped serves no move now (an
   * interrupted move is aborted or committing), and holds blocks against its space's quota.
   */
  async dropStaleSeeds(): Promise<void> {
    const storage = this.d.storage;
    if (!sendsSeeds(storage)) return;
    for (const id of await storage.listSeeds()) await this.dropSeed(id);
  }

  close(): void {
    this.closed = true;
  }

  /**
   * A drain's last resort: the space (locked) goes into `<dir>/<id>.ocsa`, an archive signed by
   * this node, and leaves the node as a move would, its tombstone naming the file. The file
   * is written under a temporary name, flushed, then renamed: it exists whole or not at all.
   */
  async exportToFile(actor: string, id: string, dir: string): Promise<Tombstone> {
    const name = `${id}.ocsa`;
    const partial = join(dir, `.${name}.partial`);
    const row = await this.d.service.beginMove(actor, id, { url: '', fingerprint: '', archive: name });
    failpoint('export.moving');
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const exp = await this.d.service.openExport(actor, id, { moving: true });
      try {
        const fh = await open(partial, 'w', 0o600);
        try {
          for await (const piece of this.archiveOf(row, exp)) await fh.write(piece as Uint8Array);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(partial, join(dir, name));
        // The rename itself made durable before the space is torn down.
        const dh = await open(dir, 'r');
        await dh.sync().finally(() => dh.close());
      } finally {
        await exp.done(true).catch(() => undefined);
      }
    } catch (err) {
      await rm(partial, { force: true }).catch(() => undefined);
      this.d.service.endMoveAborted(actor, id, 'moving', err);
      throw err;
    }
    failpoint('export.written');
    const movedAt = new Date(this.d.clock.now()).toISOString();
    const signature = nativeSign(
      null,
      tombstoneSigningInput({ spaceId: id, archive: { name }, movedAt }),
      this.d.identityKey,
    ).toString('base64url');
    const t: TombstoneRow = {
      spaceId: id,
      url: '',
      fingerprint: '',
      archive: name,
      movedAt: Date.parse(movedAt),
      signature,
    };
    await this.d.service.finishMove(actor, id, t);
    return tombstoneView(t);
  }

  /** The space's archive as a byte stream, signed by this node's identity key. */
  private archiveOf(
    row: SpaceRow,
    exp: Awaited<ReturnType<SpaceService['openExport']>>,
    o: { cut?: boolean } = {},
  ): Readable {
    const archive = spaceArchive({
      ...exp,
      ...this.d.archiveHead(row),
      node: this.d.tlsFingerprint,
      now: this.d.clock.now(),
      hashes: this.d.hashes,
      sign: (input) => ({
        by: 'node',
        publicKey: this.d.identityPublic,
        signature: nativeSign(null, input, this.d.identityKey).toString('base64url'),
      }),
    });
    // A test's cuts (failpoints.ts): a seed's dataset before its second chunk, an increment before its first.
    const [point, chunks]: [Failpoint, number] = exp.imageHead.seed ? ['move.seed-cut', 1] : ['move.increment-cut', 0];
    const cut = o.cut && isArmed(point);
    return Readable.from(cut ? cutBefore(archive, chunks, point) : archive, { objectMode: false });
  }

  /**
   * A running space on storage that sends differences (ZFS) goes in two parts: a seed now,
   * while it still runs, then (locked) only what changed since, so it is unavailable for the
   * difference rather than the whole. Answers the seed's base, or undefined when there is no
   * seed to send (a locked space, another backend). The seed goes one dataset at a time; one
   * whose stream is cut goes on where the target's copy stopped (`sendSeedPart`). A seed that
   * does not arrive ends the move before the lock: the space runs on here, as it was, and the
   * target drops its import.
   */
  private async seed(actor: string, id: string, to: MoveTarget): Promise<string | undefined> {
    if (!sendsSeeds(this.d.storage) || this.d.service.get(id).state !== 'active') return undefined;
    if (this.seeding.has(id)) throw new OcsError('conflict', 'the space is already moving');
    this.seeding.add(id);
    const target: MoveTo = { ...to, startedAt: this.d.clock.now() };
    try {
      // Refused here (the space busy, its storage failing): nothing went anywhere yet, and the
      // refusal is the answer, as it would be from the lock.
      const plan = await this.d.service.openSeed(id).catch(async (err: unknown) => {
        await this.dropSeed(id);
        throw err;
      });
      for (const dataset of plan.datasets) {
        const lost = await this.sendSeedPart(actor, id, target, plan.base, dataset);
        if (lost !== undefined) await this.seedLost(id, target, lost.err);
      }
      return plan.base;
    } finally {
      this.seeding.delete(id);
    }
  }

  /**
   * Sends one dataset of the seed, and again, up to SEED_ATTEMPTS times, while the stream is cut
   * (the target unreachable, the connection reset): each time the target says what it holds,
   * and the dataset goes on from its resume token, or whole, or not at all if it arrived after
   * all. A refusal is final. Answers undefined when the target holds the dataset whole.
   */
  private async sendSeedPart(
    actor: string,
    id: string,
    target: MoveTo,
    base: string,
    dataset: string,
  ): Promise<{ err: unknown } | undefined> {
    let token: string | undefined;
    for (let attempt = 1; ; attempt++) {
      const exp = await this.d.service
        .openExport(actor, id, { seed: { base, dataset, ...(token !== undefined ? { token } : {}) } })
        .catch((err: unknown) => ({ err }));
      if ('err' in exp) {
        // A token this node will not send from (not for this seed's dataset, not raw): the
        // dataset goes whole instead, and the target drops what it held of it.
        if (token === undefined || attempt >= SEED_ATTEMPTS) return exp;
        this.d.logger.warn({ err: exp.err, spaceId: id, dataset }, "the target's resume token was refused");
        token = undefined;
        continue;
      }
      let sent = false;
      let lost: unknown;
      try {
        await this.d.transport.send(target, id, () => this.archiveOf(exp.row, exp, { cut: dataset !== '.' }));
        sent = true;
      } catch (err) {
        lost = err;
      } finally {
        // The send ends first: a snapshot being sent cannot be destroyed.
        await exp.done(sent).catch(() => undefined);
      }
      if (sent) return undefined;
      // Refused (4xx): sending it again changes nothing.
      if ((isOcsError(lost) && lost.status < 500) || attempt >= SEED_ATTEMPTS) return { err: lost };
      this.d.logger.warn(
        { err: lost, spaceId: id, dataset, attempt },
        "a move's seed was cut; going on from the target's copy",
      );
      const held = await this.targetState(target, id, attempt).then((s) =>
        s?.seed?.base === base ? s.seed : undefined,
      );
      if (held === undefined) return { err: lost };
      if (held.held.includes(dataset)) return undefined;
      token = held.partial?.dataset === dataset ? held.partial.token : undefined;
    }
  }

  /** The target's import after a cut, asked after a backoff; undefined if it cannot be asked. */
  private async targetState(target: MoveTo, id: string, attempt: number): Promise<ImportState | undefined> {
    // A target still taking in the cut stream answers `conflict` for a moment: ask again.
    for (let i = 0; i < SEED_ATTEMPTS; i++) {
      await sleep(SEED_RETRY_MS * 2 ** (attempt - 1 + i));
      try {
        return await this.d.transport.importState(target, id);
      } catch (err) {
        if (isOcsError(err) && err.status < 500 && err.code !== 'conflict') return undefined;
      }
    }
    return undefined;
  }

  /** A seed the target did not take: the move ends here, before the lock. */
  private async seedLost(id: string, target: MoveTo, err: unknown): Promise<never> {
    this.d.logger.warn({ err, spaceId: id, to: target.url }, "the move's seed did not arrive; the space runs on here");
    await this.dropSeed(id);
    await this.d.transport.abort(target, id).catch(() => this.abortInBackground(id, target));
    throw new OcsError('move_aborted', 'the move stopped before the space was locked: it runs here, as it was', {
      reason: isOcsError(err) ? err.message : 'the target could not be reached',
      ...(isOcsError(err) ? { code: err.code } : {}),
    });
  }

  private async dropSeed(id: string): Promise<void> {
    const storage = this.d.storage;
    if (!sendsSeeds(storage)) return;
    await storage.dropSeed(id).catch((err: unknown) => {
      // Harmless left: the next seed or whole export of the space replaces it.
      this.d.logger.warn({ err, spaceId: id }, "a move's seed could not be dropped");
    });
  }

  /**
   * Sends the locked space. An increment onto a seed whose stream is cut goes again, up to
   * SEED_ATTEMPTS times, while the target still holds the seed (it dropped what the cut one
   * brought); if the target answers that it holds the space `prepared`, the stream arrived and
   * only the answer was lost. A whole image is sent once: a cut one ends the move.
   */
  private async send(actor: string, row: SpaceRow, to: MoveTo, since?: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const exp = await this.d.service.openExport(actor, row.id, { moving: true, ...(since ? { since } : {}) });
      let sent = false;
      let lost: unknown;
      try {
        await this.d.transport.send(to, row.id, () => this.archiveOf(row, exp, { cut: since !== undefined }));
        sent = true;
      } catch (err) {
        lost = err;
      } finally {
        await exp.done(sent).catch(() => undefined);
      }
      if (sent) return;
      if (since === undefined || (isOcsError(lost) && lost.status < 500) || attempt >= SEED_ATTEMPTS) throw lost;
      this.d.logger.warn({ err: lost, spaceId: row.id, attempt }, "a move's increment was cut; asking the target");
      const state = await this.targetState(to, row.id, attempt);
      if (state?.state === 'prepared') return;
      if (state?.state !== 'importing' || state.seed?.base !== since) throw lost;
    }
  }

  private async abort(actor: string, id: string, to: MoveTo, why: unknown): Promise<void> {
    this.d.logger.warn({ err: why, spaceId: id, to: to.url }, 'move aborted before its commit');
    // Locked here first: from now on the target's copy is never committed, whatever it holds.
    this.d.service.endMoveAborted(actor, id, 'moving', why);
    await this.d.transport.abort(to, id).catch((err: unknown) => {
      this.d.logger.warn({ err, spaceId: id }, 'the target could not be told to drop the import yet');
      this.abortInBackground(id, to);
    });
  }

  /**
   * Tells the target to drop an import it may still hold, until it answers or the import has
   * expired there anyway: a target that was down then holds no uncommitted copy for long.
   */
  private abortInBackground(id: string, to: MoveTo): void {
    const until = this.d.clock.now() + ABORT_RETRY_MS;
    const me = { stop: false };
    const before = this.aborting.get(id);
    if (before) before.stop = true;
    this.aborting.set(id, me);
    void (async () => {
      for (let i = 0; !this.closed && !me.stop && this.d.clock.now() < until; i++) {
        await sleep(Math.min(COMMIT_RETRY_MAX_MS, 1000 * 2 ** i));
        if (me.stop) break;
        try {
          await this.d.transport.abort(to, id);
          break;
        } catch (err) {
          // Committed: then it was never this abort's (a later move's import); nothing to drop.
          if (isOcsError(err) && err.code === 'conflict') break;
        }
      }
      if (this.aborting.get(id) === me) this.aborting.delete(id);
    })();
  }

  /** Asks the target to commit, `attempts` times with backoff, then on in the background. */
  private async commit(actor: string, id: string, to: MoveTo, attempts: number): Promise<Tombstone> {
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        return await this.commitOnce(actor, id, to);
      } catch (err) {
        if (isOcsError(err) && err.code === 'move_aborted') throw err;
        last = err;
        await sleep(Math.min(COMMIT_RETRY_MAX_MS, 500 * 2 ** i));
      }
    }
    this.d.logger.warn({ err: last, spaceId: id }, 'the target did not answer the commit; retrying in the background');
    this.commitInBackground(actor, id, to);
    throw new OcsError(
      'unavailable',
      'the space is committing to its target, which did not answer yet; this node keeps asking until it does',
      { spaceId: id },
    );
  }

  private async commitOnce(actor: string, id: string, to: MoveTo): Promise<Tombstone> {
    const answer = await this.d.transport.commit(to, id);
    if (answer === 'committed') failpoint('move.committed');
    if (answer === 'gone') {
      this.d.service.endMoveAborted(
        actor,
        id,
        'committing',
        new OcsError('not_found', 'the target holds no such import'),
      );
      throw new OcsError('move_aborted', 'the target no longer held the space: it is locked here, as it was', {
        reason: 'the target holds no such import',
      });
    }
    const movedAt = new Date(this.d.clock.now()).toISOString();
    const unsigned = { spaceId: id, to: { url: to.url, fingerprint: to.fingerprint }, movedAt };
    const signature = nativeSign(null, tombstoneSigningInput(unsigned), this.d.identityKey).toString('base64url');
    const t: TombstoneRow = {
      spaceId: id,
      url: to.url,
      fingerprint: to.fingerprint,
      archive: null,
      movedAt: Date.parse(movedAt),
      signature,
    };
    await this.d.service.finishMove(actor, id, t);
    return tombstoneView(t);
  }

  private commitInBackground(actor: string, id: string, to: MoveTo): void {
    if (this.committing.has(id)) return;
    this.committing.add(id);
    void (async () => {
      for (let i = 0; !this.closed; i++) {
        try {
          await this.commitOnce(actor, id, to);
          break;
        } catch (err) {
          if (isOcsError(err) && err.code === 'move_aborted') break;
          this.d.logger.warn({ err, spaceId: id }, 'commit not answered yet');
          await sleep(Math.min(COMMIT_RETRY_MAX_MS, 1000 * 2 ** i));
        }
      }
      this.committing.delete(id);
    })();
  }
}

/** A data frame of an archive (`D`, space-archive.ts): one chunk of the image. */
const DATA_FRAME = 0x44;

/**
 * The archive breaks off (an error, as a dropped connection) where chunk number `chunks`
 * (counted from 0) would go out, if it comes and `point` was not cut yet in this process.
 */
async function* cutBefore(stream: AsyncIterable<Uint8Array>, chunks: number, point: Failpoint) {
  let seen = 0;
  for await (const piece of stream) {
    if (piece[0] === DATA_FRAME && seen++ === chunks && cutOnce(point))
      throw new Error(`the stream was cut (failpoint ${point})`);
    yield piece;
  }
}
