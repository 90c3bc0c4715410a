/**
 * The route catalogue of both APIs: one source for the servers (which bind handlers to these
 * entries and validate with their schemas), the client, and docs/api/openapi.json.
 */
import type { Static, TObject, TSchema } from '@sinclair/typebox';
import { Empty, ErrorResponse, Resources } from './schemas/common.js';
import type { ErrorCode } from './errors.js';
import * as N from './schemas/node.js';
import * as S from './schemas/space.js';

import type { Role } from './jwt.js';
import { spaceRoutesOf, type SpaceRouteOf } from './operations.js';
import { nodeOperationPart, nodeRoutesOf, type NodeRouteOf } from './node-operations.js';

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
   * `import-source`: no token; signed by the identity key of the node an import names as the
   * space's source (a move's node-to-node steps).
   * `peer-node`: no token; signed by the identity key of a node this node's farmer lists as a
   * peer (a drain's import, on the owner's delegation).
   * `owner-or-delegate`: an owner signature, or one by an orchestrator key the space's
   * delegation names (with a token of the space's org, as for the owner).
   */
  signature: 'none' | 'owner' | 'bound-key' | 'owner-or-farmer' | 'import-source' | 'peer-node' | 'owner-or-delegate';
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

/** The node API's routes, in catalogue order: a view of `NODE_OPERATIONS` (node-operations.ts). */
export const NODE_ROUTES: readonly NodeRouteOf[] = nodeRoutesOf();

/** The space API's routes, in catalogue order: a view of `SPACE_OPERATIONS` (operations.ts). */
export const SPACE_ROUTES: readonly SpaceRoute[] = spaceRoutesOf();

export const SPACE_API_PREFIX = '/v1/spaces/{spaceId}/api';

function isSchema(v: unknown): v is TSchema {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && ('type' in v || 'anyOf' in v);
}

export type NodeRoute = NodeRouteOf;
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
  // A node operation that reaches the host names the part that failed under it.
  if (api === 'node' && nodeOperationPart(r.id)) codes.add('host_failed');
  // A space that left the node answers where it went.
  if (api === 'node' && r.path.includes('{spaceId}')) codes.add('space_moved');
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
