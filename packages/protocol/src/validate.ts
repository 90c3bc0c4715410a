/**
 * Schema validation, compiled once per schema. Refusals name the field and the rule but never
 * echo the value: a value may be a key or a token pasted in the wrong place.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { Static, TObject, TSchema } from '@sinclair/typebox';
import { OcsError } from './errors.js';

// ajv-formats ships CommonJS with `exports.default`; under NodeNext its default import is the module object.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (
  ajv: Ajv,
  formats: string[],
) => Ajv;

const ajv = new Ajv({
  strict: true,
  allErrors: false,
  coerceTypes: false,
  useDefaults: false,
  removeAdditional: false,
});
addFormats(ajv, ['date-time']);

const cache = new WeakMap<TSchema, ValidateFunction>();

function compiled(schema: TSchema): ValidateFunction {
  let fn = cache.get(schema);
  if (!fn) {
    fn = ajv.compile(schema);
    cache.set(schema, fn);
  }
  return fn;
}

/**
 * Returns the value typed by its schema, or throws `invalid_request` naming the first bad field
 * and where it was (`request body`, `path parameter`, `query parameter`, `header`).
 */
export function validate<T extends TSchema>(schema: T, value: unknown, where = 'request body'): Static<T> {
  const fn = compiled(schema);
  if (fn(value)) return value as Static<T>;
  const first = fn.errors?.[0];
  const field = first ? first.instancePath || '/' : '/';
  // An unknown field's name is not echoed either: a secret may have been pasted as a key.
  const rule = first?.keyword === 'additionalProperties' ? 'has an unknown field' : (first?.message ?? 'is invalid');
  throw new OcsError('invalid_request', `${where} ${field} ${rule}`, { field, rule: first?.keyword ?? 'schema' });
}

type Raw = Record<string, string | string[] | undefined>;

/**
 * Query parameters by their schema: each given once; integer-typed ones converted from their
 * decimal form (anything else stays a string, and the schema refuses it). Unknown names are
 * refused; a route without a query schema takes none (a stray one is a client bug).
 */
export function validateQuery<T extends TObject>(schema: T | undefined, query: Raw): Static<T> {
  if (!schema) {
    if (Object.keys(query).length > 0)
      throw new OcsError('invalid_request', 'this route takes no query parameters', { field: 'query' });
    return {} as Static<T>;
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined) continue;
    if (Array.isArray(v))
      throw new OcsError('invalid_request', 'a query parameter is given more than once', { field: 'query' });
    const type = (schema.properties[k] as { type?: string } | undefined)?.type;
    out[k] = type === 'integer' && /^[0-9]{1,15}$/.test(v) ? Number(v) : v;
  }
  return validate(schema, out, 'query parameter');
}

/** The route's declared headers only (lowercase names); every other header passes untouched. */
export function validateHeaders<T extends TObject>(schema: T, headers: Raw): Static<T> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(schema.properties)) {
    const v = headers[k];
    if (v === undefined) continue;
    if (Array.isArray(v))
      throw new OcsError('invalid_request', `the ${k} header is given more than once`, { field: k });
    out[k] = v;
  }
  return validate(schema, out, 'header');
}

/** Compiles eagerly: servers call this at start-up so a bad schema fails the boot, not a request. */
export function precompile(schemas: Iterable<TSchema>): void {
  for (const s of schemas) compiled(s);
}
