/**
 * Schema validation, compiled once per schema. Refusals name the field and the rule but never
 * echo the value: a value may be a key or a token pasted in the wrong place.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { Static, TSchema } from '@sinclair/typebox';
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

/** Returns the value typed by its schema, or throws `invalid_request` naming the first bad field. */
export function validate<T extends TSchema>(schema: T, value: unknown): Static<T> {
  const fn = compiled(schema);
  if (fn(value)) return value as Static<T>;
  const first = fn.errors?.[0];
  const field = first ? first.instancePath || '/' : '/';
  // An unknown field's name is not echoed either: a secret may have been pasted as a key.
  const rule = first?.keyword === 'additionalProperties' ? 'has an unknown field' : (first?.message ?? 'is invalid');
  throw new OcsError('invalid_request', `request body ${field} ${rule}`, { field, rule: first?.keyword ?? 'schema' });
}

/** Compiles eagerly: servers call this at start-up so a bad schema fails the boot, not a request. */
export function precompile(schemas: Iterable<TSchema>): void {
  for (const s of schemas) compiled(s);
}
