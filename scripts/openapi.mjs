#!/usr/bin/env node
// Generates docs/api/openapi.json from the protocol package's route catalogue and schemas.
// `--check` fails when the checked-in file is stale (CI runs it).
import { readFileSync, writeFileSync } from 'node:fs';
import {
  NODE_ROUTES,
  SPACE_ROUTES,
  SPACE_API_PREFIX,
  NAMED_SCHEMAS,
  ERROR_STATUS,
  SpaceId,
  refusalsOf,
} from '../packages/protocol/dist/index.js';

const root = new URL('..', import.meta.url).pathname;
const out = `${root}docs/api/openapi.json`;
const version = JSON.parse(readFileSync(`${root}lerna.json`, 'utf8')).version;

// TypeBox schemas are plain JSON Schema plus symbol keys, which JSON.stringify drops.
const byIdentity = new Map(Object.entries(NAMED_SCHEMAS).map(([name, schema]) => [schema, name]));
const ref = (schema) => (byIdentity.has(schema) ? { $ref: `#/components/schemas/${byIdentity.get(schema)}` } : schema);

function operation(route, prefix, tag, api) {
  const declared = (where, schema) =>
    Object.entries(schema?.properties ?? {}).map(([name, s]) => ({
      name,
      in: where,
      required: (schema.required ?? []).includes(name),
      schema: s,
      ...(s.description ? { description: s.description } : {}),
    }));
  const params = [
    ...(prefix.includes('{spaceId}') ? [{ name: 'spaceId', in: 'path', required: true, schema: SpaceId }] : []),
    ...declared('path', route.params),
    ...declared('query', route.query),
    ...declared('header', route.headers),
  ];
  const op = {
    operationId: route.id,
    summary: route.summary,
    tags: [tag],
    'x-ocs-roles': route.roles,
    'x-ocs-signature': route.signature,
    parameters: params,
    responses: {},
  };
  if (route.roles.length > 0) op.security = [{ bearer: [] }];
  if (route.body === 'binary') {
    op.requestBody = {
      required: true,
      content: { 'application/x-tar': { schema: { type: 'string', format: 'binary' } } },
    };
  } else if (route.body) {
    op.requestBody = { required: true, content: { 'application/json': { schema: ref(route.body) } } };
  }
  const ok = { description: 'OK' };
  if (route.response === 'text') ok.content = { 'text/plain': { schema: { type: 'string' } } };
  else if (route.response === 'binary')
    ok.content = { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } };
  else if (route.response) ok.content = { 'application/json': { schema: ref(route.response) } };
  op.responses[String(route.status)] = ok;
  // Each refusal status with the codes this route can answer with (see refusalsOf).
  const byStatus = new Map();
  for (const code of refusalsOf(route, api)) {
    const status = String(ERROR_STATUS[code]);
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  for (const [status, codes] of [...byStatus].sort()) {
    op.responses[status] = {
      description: codes.join(', '),
      content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorResponse' } } },
    };
  }
  return op;
}

const paths = {};
const add = (routes, prefix, api) => {
  for (const r of routes) {
    const p = prefix + r.path;
    paths[p] ??= {};
    paths[p][r.method.toLowerCase()] = operation(r, prefix, api, api);
  }
};
add(NODE_ROUTES, '', 'node');
add(SPACE_ROUTES, SPACE_API_PREFIX, 'space');

const doc = {
  openapi: '3.1.0',
  info: {
    title: 'OpenCluster Spaces',
    version,
    description:
      'Node daemon and space APIs. Every call carries a short-lived JWT (Authorization: Bearer); calls marked ' +
      'x-ocs-signature also carry an RFC 9421 ed25519 signature (Signature, Signature-Input) covering @method, ' +
      '@target-uri, authorization and content-digest (RFC 9530) with created, expires, nonce and tag="ocs-v1".',
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
    schemas: NAMED_SCHEMAS,
  },
  'x-ocs-error-codes': ERROR_STATUS,
  paths,
};
const text = `${JSON.stringify(doc, null, 2)}\n`;
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(out, 'utf8');
  } catch {
    /* missing counts as stale */
  }
  if (current !== text) {
    console.error('docs/api/openapi.json is stale: run `npm run openapi` and commit it');
    process.exit(1);
  }
  console.log('docs/api/openapi.json is current');
} else {
  writeFileSync(out, text);
  console.log(`wrote ${out}`);
}
