/**
 * A delegation: the owner's signed permission for a space to be moved without the owner at
 * hand (a drain, an orchestrator's rebalancing). It names the space and its owner key, the nodes
 * that may receive it, the orchestrator keys that may move it, and until when. Only the owner's
 * key signs one, so a node or an orchestrator can show it to a third party, which checks it on
 * its own: it is a compact JWS (RFC 7515, `alg: EdDSA`, RFC 8037) whose payload is the grant.
 *
 * A delegation gives no access to the space's data: whoever it names can move the ciphertext,
 * never unlock it (the space key stays wrapped to the owner's key).
 */
import { Type, type Static } from '@sinclair/typebox';
import { base64urlnopad } from '@scure/base';
import { OcsError } from './errors.js';
import { verifyEd25519, parsePublicKey, type Ed25519PrivateKey } from './keys.js';
import { Obj, SpaceId, Timestamp } from './schemas/common.js';
import { MoveTarget } from './schemas/node.js';
import { validate } from './validate.js';

/** The JWS `typ` of a delegation: a JWS made for anything else is never taken for one. */
export const DELEGATION_TYPE = 'ocs-delegation+jws';
/** A delegation lasts at most this long: the owner renews what it still means. */
export const DELEGATION_MAX_MS = 366 * 86400_000;
const MAX_JWS_LENGTH = 8192;
const KEY = Type.String({ pattern: '^[A-Za-z0-9_-]{43}$', description: 'base64url Ed25519 public key' });

export const DelegationGrant = Obj({
  v: Type.Literal(1),
  spaceId: SpaceId,
  /** The space's organization: a node receiving it lists it under this org. */
  org: Type.String({ minLength: 1, maxLength: 256 }),
  /** The owner key that signs this and stays bound to the space wherever it goes. */
  ownerKey: KEY,
  /** Nodes that may receive the space, each pinned to its certificate. */
  nodes: Type.Array(MoveTarget, { maxItems: 16 }),
  /** Keys of orchestrators that may move the space to a node of their choice. */
  orchestrators: Type.Array(KEY, { maxItems: 16 }),
  issuedAt: Timestamp,
  notAfter: Timestamp,
});
export type DelegationGrant = Static<typeof DelegationGrant>;

const enc = new TextEncoder();
const HEADER = base64urlnopad.encode(enc.encode(JSON.stringify({ alg: 'EdDSA', typ: DELEGATION_TYPE })));

function invalid(message: string): OcsError {
  return new OcsError('delegation_invalid', message);
}

/** The owner signs a grant; the result is what `POST …/delegation` takes and a drain shows. */
export function signDelegation(owner: Ed25519PrivateKey, grant: DelegationGrant): string {
  checkShape(grant);
  if (grant.ownerKey !== owner.publicKey.toBase64url())
    throw new TypeError('a delegation is signed by the owner key it names');
  const payload = base64urlnopad.encode(enc.encode(JSON.stringify(grant)));
  const signature = owner.sign(enc.encode(`${HEADER}.${payload}`));
  return `${HEADER}.${payload}.${base64urlnopad.encode(signature)}`;
}

function checkShape(grant: DelegationGrant): void {
  validate(DelegationGrant, grant, 'delegation');
  if (grant.nodes.length === 0 && grant.orchestrators.length === 0)
    throw invalid('a delegation names at least one node or orchestrator');
  const issued = Date.parse(grant.issuedAt);
  const until = Date.parse(grant.notAfter);
  if (!(until > issued)) throw invalid('a delegation ends after it was issued');
  if (until - issued > DELEGATION_MAX_MS) throw invalid('a delegation lasts at most 366 days');
}

export interface DelegationExpectation {
  spaceId: string;
  /** base64url of the space's owner key: the only key whose delegation counts. */
  ownerKey: string;
  /** Milliseconds since the epoch. */
  now: number;
}

/**
 * Reads and checks a delegation: its form, the owner's signature, that it is for this space and
 * this owner, and that it holds now. Every failure is `delegation_invalid` (403), saying which.
 */
export function verifyDelegation(jws: string, expect: DelegationExpectation): DelegationGrant {
  const grant = readDelegation(jws);
  if (grant.spaceId !== expect.spaceId) throw invalid('the delegation is for another space');
  if (grant.ownerKey !== expect.ownerKey) throw invalid("the delegation is not signed by the space's owner key");
  if (Date.parse(grant.notAfter) <= expect.now) throw invalid('the delegation has expired');
  if (Date.parse(grant.issuedAt) > expect.now + 300_000) throw invalid('the delegation is issued in the future');
  return grant;
}

/** The grant of a delegation whose signature by the owner key it names checks (not whether it holds now). */
export function readDelegation(jws: string): DelegationGrant {
  if (typeof jws !== 'string' || jws.length > MAX_JWS_LENGTH) throw invalid('a delegation is a compact JWS');
  const parts = jws.split('.');
  if (parts.length !== 3) throw invalid('a delegation is a compact JWS');
  const [header, payload, signature] = parts as [string, string, string];
  // The header is the one this module writes: no other algorithm, type or extension is taken.
  if (header !== HEADER) throw invalid(`a delegation's header is alg EdDSA, typ ${DELEGATION_TYPE}`);
  let grant: DelegationGrant;
  let sig: Uint8Array;
  try {
    grant = JSON.parse(
      new TextDecoder('utf-8', { fatal: true }).decode(base64urlnopad.decode(payload)),
    ) as DelegationGrant;
    sig = base64urlnopad.decode(signature);
  } catch {
    throw invalid('a delegation is a compact JWS');
  }
  try {
    checkShape(grant);
  } catch (err) {
    throw err instanceof OcsError && err.code === 'delegation_invalid'
      ? err
      : invalid(`the delegation's grant is malformed: ${(err as Error).message}`);
  }
  const owner = parsePublicKey(grant.ownerKey);
  if (sig.length !== 64 || !verifyEd25519(sig, enc.encode(`${header}.${payload}`), owner))
    throw invalid("the delegation's signature does not check against the owner key it names");
  return grant;
}
