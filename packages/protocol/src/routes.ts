/**
 * The route catalogue of both APIs: one source for the servers (which bind handlers to these
 * entries and validate with their schemas), the client, and docs/api/openapi.json.
 */
import { Type, type Static, type TObject, type TSchema } from '@sinclair/typebox';
import { Empty, ErrorResponse, Obj, Resources, SpaceId } from './schemas/common.js';
import type { ErrorCode } from './errors.js';
import * as N from './schemas/node.js';
import * as S from './schemas/space.js';

import type { Role } from './jwt.js';
import { spaceRoutesOf, type SpaceRouteOf } from './operations.js';

export type HttpMethod = 'GET' | 'POST' | 'DELETE';

export interface RouteSpec {
  /** OpenAPI operationId; also the handler's name on the server. */
  id: string;
  method: HttpMethod;
  /** OpenAPI-style path with {params}. Space API paths are relative to the space's apiBase. */
  path: string;
  summary: string;
  /** A JWT with any one of these roles is required; `[]` means no token (health, metrics). */
  roles: readonly Role[];
  /**
   * `owner`: the request must also carry an RFC 9421 signature by the resource's owner key.
   * `bound-key`: signed by the key being bound in the body (proof of possession).
   * `owner-or-farmer`: either an owner signature, or a token with role farmer.
   */
  signature: 'none' | 'owner' | 'bound-key' | 'owner-or-farmer';
  /** Path parameters: one property per `{name}` in path (the space API's `{spaceId}` prefix aside). */
  params?: TObject;
  /** Query parameters. Integers arrive as decimal strings and are converted before validation. */
  query?: TObject;
  /** Request headers the route reads (lowercase names), validated on their own; others pass. */
  headers?: TObject;
  body?: TSchema | 'binary';
  response?: TSchema | 'text' | 'binary';
  status: number;
  /** Refusals of this route beyond those every route of its kind can give (see `refusalsOf`). */
  errors?: readonly ErrorCode[];
}

const SpaceRef = Obj({ spaceId: SpaceId });
/** A client's key for one reservation: a retry with the same key returns the same space. */
export const IdempotencyKey = Type.String({
  pattern: '^[A-Za-z0-9_.:-]{16,128}$',
  description: 'Chosen by the client (16 to 128 of A-Z a-z 0-9 _ . : -); kept for 24 hours.',
});
export const CreateSpaceHeaders = Obj({ 'idempotency-key': Type.Optional(IdempotencyKey) });
export const AuditQuery = Obj({
  after: Type.Optional(Type.Integer({ minimum: 0, description: 'Entries after this sequence number.' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'At most this many (default 100).' })),
});

export const NODE_ROUTES = [
  {
    id: 'health',
    method: 'GET',
    path: '/healthz',
    summary: 'Liveness',
    roles: [],
    signature: 'none',
    response: N.Health,
    status: 200,
  },
  {
    id: 'metrics',
    method: 'GET',
    path: '/metrics',
    // Counts of spaces, workloads and refusals say what a node holds and who is refused: only
    // for the node's monitors and its farmer (a scraper's token: docs/operator-guide.md).
    summary: 'Prometheus metrics',
    roles: ['monitor', 'farmer'],
    signature: 'none',
    response: 'text',
    status: 200,
  },
  {
    id: 'getNode',
    method: 'GET',
    path: '/v1/node',
    summary: 'Identity, TLS fingerprint, unlock recipient and capacity',
    roles: ['farmer', 'spaces', 'monitor'],
    signature: 'none',
    response: N.NodeInfo,
    status: 200,
  },
  {
    id: 'createSpace',
    method: 'POST',
    path: '/v1/spaces',
    headers: CreateSpaceHeaders,
    summary: 'Reserve a space bound to an owner key',
    roles: ['spaces'],
    signature: 'bound-key',
    body: N.CreateSpaceRequest,
    response: N.CreateSpaceResponse,
    status: 201,
    errors: ['capacity_exceeded', 'conflict', 'key_malformed', 'key_unsupported', 'key_encrypted'],
  },
  {
    id: 'listSpaces',
    method: 'GET',
    path: '/v1/spaces',
    summary: "Spaces of the caller's org (all for farmer and monitor)",
    roles: ['spaces', 'farmer', 'monitor'],
    signature: 'none',
    response: N.SpaceList,
    status: 200,
  },
  {
    id: 'getSpace',
    method: 'GET',
    path: '/v1/spaces/{spaceId}',
    params: SpaceRef,
    summary: 'One space',
    roles: ['spaces', 'farmer', 'monitor'],
    signature: 'none',
    response: N.Space,
    status: 200,
  },
  {
    id: 'renewSpace',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/renew',
    params: SpaceRef,
    summary: 'Extend the lease (never shortens it)',
    roles: ['spaces', 'farmer'],
    signature: 'owner-or-farmer',
    body: N.RenewRequest,
    response: N.Space,
    status: 200,
    errors: ['lease_expired'],
  },
  {
    id: 'lockSpace',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/lock',
    params: SpaceRef,
    summary: 'Stop workloads and evict the storage key',
    roles: ['spaces', 'storage'],
    signature: 'owner',
    body: Empty,
    response: N.Space,
    status: 200,
    errors: ['space_locked', 'lease_expired'],
  },
  {
    id: 'unlockSpace',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/unlock',
    params: SpaceRef,
    summary: 'Load the space key, sealed to the node unlock recipient',
    roles: ['spaces', 'storage'],
    signature: 'owner',
    body: N.UnlockRequest,
    response: N.Space,
    status: 200,
    errors: ['space_unlocked', 'unwrap_failed', 'lease_expired'],
  },
  {
    id: 'rotateSpaceKey',
    method: 'POST',
    path: '/v1/spaces/{spaceId}/rotate-key',
    params: SpaceRef,
    summary: 'Re-wrap the storage under a fresh key',
    roles: ['spaces', 'storage'],
    signature: 'owner',
    body: N.RotateKeyRequest,
    response: N.RotateKeyResponse,
    status: 200,
    errors: ['space_locked', 'unwrap_failed', 'lease_expired'],
  },
  {
    id: 'deleteSpace',
    method: 'DELETE',
    path: '/v1/spaces/{spaceId}',
    params: SpaceRef,
    summary: 'Destroy the space and shred its keys',
    roles: ['spaces', 'farmer'],
    signature: 'owner-or-farmer',
    status: 204,
  },
  {
    id: 'listAudit',
    method: 'GET',
    path: '/v1/audit',
    query: AuditQuery,
    summary: 'The hash-chained audit log',
    roles: ['farmer', 'monitor'],
    signature: 'none',
    response: N.AuditPage,
    status: 200,
  },
] as const satisfies readonly RouteSpec[];

/** The space API's routes, in catalogue order: a view of `SPACE_OPERATIONS` (operations.ts). */
export const SPACE_ROUTES: readonly SpaceRoute[] = spaceRoutesOf();

export const SPACE_API_PREFIX = '/v1/spaces/{spaceId}/api';

function isSchema(v: unknown): v is TSchema {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && ('type' in v || 'anyOf' in v);
}

export type NodeRoute = (typeof NODE_ROUTES)[number];
export type SpaceRoute = SpaceRouteOf;
export type NodeRouteId = NodeRoute['id'];
export type SpaceRouteId = SpaceRoute['id'];

type StaticOr<T, D> = T extends TSchema ? Static<T> : D;
// `{}` here is "no properties", what a route without parameters takes.
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
type None = {};
/** What a route's handler receives and a client sends, typed from the catalogue entry. */
export type ParamsOf<R> = R extends { params: infer P } ? StaticOr<P, None> : None;
export type QueryOf<R> = R extends { query: infer Q } ? StaticOr<Q, None> : None;
export type HeadersOf<R> = R extends { headers: infer H } ? StaticOr<H, None> : None;
export type BodyOf<R> = R extends { body: infer B }
  ? B extends 'binary'
    ? 'binary'
    : StaticOr<B, undefined>
  : undefined;
export type ResponseOf<R> = R extends { response: infer T }
  ? T extends 'text'
    ? string
    : T extends 'binary'
      ? Uint8Array
      : StaticOr<T, unknown>
  : undefined;

export function nodeRoute<I extends NodeRouteId>(id: I): Extract<NodeRoute, { id: I }> {
  return NODE_ROUTES.find((r) => r.id === id) as Extract<NodeRoute, { id: I }>;
}
export function spaceRoute<I extends SpaceRouteId>(id: I): Extract<SpaceRoute, { id: I }> {
  return SPACE_ROUTES.find((r) => r.id === id) as Extract<SpaceRoute, { id: I }>;
}

/**
 * Every refusal code a route can answer with: those of its kind (token, signature, body, path
 * parameters) and its own. docs/api/openapi.json lists them per status.
 */
export function refusalsOf(r: RouteSpec, api: 'node' | 'space'): ErrorCode[] {
  const codes = new Set<ErrorCode>(['misdirected_request', 'not_found', 'method_not_allowed', 'rate_limited']);
  // The daemon forwards to a space's process only while the space is active; the broker's host calls can fail.
  if (api === 'space') codes.add('space_locked').add('lease_expired').add('unavailable').add('host_failed');
  const add = (...c: ErrorCode[]) => c.forEach((x) => codes.add(x));
  if (r.roles.length > 0)
    add(
      'token_missing',
      'token_malformed',
      'token_algorithm_refused',
      'token_signature_invalid',
      'token_issuer_unknown',
      'token_key_unknown',
      'token_type_invalid',
      'token_audience_invalid',
      'token_expired',
      'token_not_yet_valid',
      'token_lifetime_too_long',
      'token_claims_invalid',
      'role_missing',
      'headers_too_large',
    );
  if (r.signature !== 'none')
    add(
      'signature_missing',
      'signature_malformed',
      'signature_algorithm_refused',
      'signature_components_missing',
      'signature_invalid',
      'signature_expired',
      'signature_not_yet_valid',
      'signature_key_unknown',
      'replayed',
      'not_owner',
    );
  if (r.body) add('digest_missing', 'digest_malformed', 'digest_mismatch', 'body_too_large');
  if (r.body && r.body !== 'binary') add('invalid_request', 'unsupported_media_type');
  if (r.params || r.query || r.headers) add('invalid_request');
  add(...(r.errors ?? []), 'internal');
  return [...codes];
}

/** Named schemas for docs/api/openapi.json components. */
export const NAMED_SCHEMAS: Record<string, TSchema> = Object.fromEntries(
  Object.entries({ ErrorResponse, Resources, Empty, ...N, ...S } as Record<string, unknown>).filter(
    (e): e is [string, TSchema] => isSchema(e[1]),
  ),
);
