/**
 * How a node reaches a move's target: the SDK's client, pinned to the target's certificate
 * fingerprint the owner named, every request signed by this node's identity key (the key the
 * target's import names) and carrying no token: the owner authorized the import on the target
 * itself. One attempt per call: the mover decides what to repeat.
 */
import type { KeyObject } from 'node:crypto';
import { OcsClient } from '@ocs/client';
import { Ed25519PrivateKey, isOcsError } from '@ocs/protocol';
import type { MoveTransport } from './mover.js';
import type { MoveTo } from '../state/index.js';

/** A stream may pause as long as the target's check of a large image takes. */
const TIMEOUT_MS = 15 * 60_000;

export function sdkMoveTransport(identityKey: KeyObject): MoveTransport {
  const d = identityKey.export({ format: 'jwk' }).d;
  if (typeof d !== 'string') throw new Error('the identity key is not an Ed25519 private key');
  const seed = new Uint8Array(Buffer.from(d, 'base64url'));
  const key = Ed25519PrivateKey.fromSeed(seed);
  seed.fill(0);
  const withClient = async <T>(
    to: Pick<MoveTo, 'url' | 'fingerprint'>,
    f: (c: OcsClient) => Promise<T>,
  ): Promise<T> => {
    const c = new OcsClient({
      url: to.url,
      fingerprint: to.fingerprint,
      ownerKey: key,
      retries: 0,
      timeoutMs: TIMEOUT_MS,
    });
    try {
      return await f(c);
    } finally {
      c.close();
    }
  };
  return {
    send: (to, spaceId, archive) =>
      withClient(to, async (c) => {
        await c.imports.receive(spaceId, archive);
      }),
    importState: (to, spaceId) => withClient(to, (c) => c.imports.state(spaceId)),
    commit: (to, spaceId) =>
      withClient(to, async (c) => {
        try {
          await c.imports.commit(spaceId);
          return 'committed' as const;
        } catch (err) {
          if (isOcsError(err) && err.code === 'not_found') return 'gone' as const;
          throw err;
        }
      }),
    openPeerImport: (to, req) =>
      withClient(to, async (c) => {
        await c.imports.openPeer(req);
      }),
    abort: (to, spaceId) =>
      withClient(to, async (c) => {
        try {
          await c.imports.abort(spaceId);
        } catch (err) {
          if (!(isOcsError(err) && err.code === 'not_found')) throw err;
        }
      }),
  };
}
