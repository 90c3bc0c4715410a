/**
 * Building blocks shared by both APIs. Every object is closed (`additionalProperties: false`):
 * an unknown field is a client bug or an attack, and either way it is refused, not ignored.
 */
import { Type, type Static, type TSchema, type TObject, type TProperties, type ObjectOptions } from '@sinclair/typebox';

/** A closed object: the default for every body. */
export function Obj<T extends TProperties>(properties: T, options: ObjectOptions = {}): TObject<T> {
  return Type.Object(properties, { additionalProperties: false, ...options });
}

export const Id = (prefix: string) =>
  Type.String({
    pattern: `^${prefix}_[a-z0-9]{20}$`,
    description: `An id of the form ${prefix}_ followed by 20 base32 characters.`,
  });

export const SpaceId = Id('sp');
const SPACE_ID = new RegExp(SpaceId.pattern!);
/** Whether `s` is a space id of the wire form (`SpaceId`): for ids met outside a schema (paths, file names, rows). */
export function isSpaceId(s: unknown): s is string {
  return typeof s === 'string' && SPACE_ID.test(s);
}
export const VolumeId = Id('vol');
export const ContainerId = Id('ctr');
export const VmId = Id('vm');

/** Names chosen by owners: short, safe in paths, labels and Docker/libvirt names. */
export const Name = Type.String({
  pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$',
  description: 'Lowercase name, 1 to 63 characters.',
});

export const Timestamp = Type.String({ format: 'date-time', description: 'RFC 3339 UTC timestamp.' });

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export const Resources = Obj(
  {
    cpuMillicores: Type.Integer({ minimum: 10, maximum: 1_024_000, description: '1000 = one core.' }),
    memoryBytes: Type.Integer({ minimum: 16 * MiB, maximum: 64 * 1024 * GiB }),
    storageBytes: Type.Integer({ minimum: 0, maximum: 1024 * 1024 * GiB }),
    pids: Type.Optional(Type.Integer({ minimum: 16, maximum: 4_194_304 })),
    ports: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 65_535,
        description: "Ports of the node the space may publish at once (from the farmer's range); default 0.",
      }),
    ),
  },
  { description: 'A reservation of CPU, memory, storage and (optionally) processes and published ports.' },
);
export type Resources = Static<typeof Resources>;

/**
 * An owner's Ed25519 public key: raw 32 bytes as base64url, an OpenSSH `ssh-ed25519` line,
 * or a JWK (OKP/Ed25519). Parsed and checked by `parsePublicKey`.
 */
export const PublicKeyInput = Type.Union(
  [
    Type.String({ minLength: 43, maxLength: 1024 }),
    // Any JWK shape gets through here so that parsePublicKey can say precisely what is wrong
    // with it (key_unsupported for RSA/EC, key_malformed for a broken OKP).
    Type.Object({ kty: Type.String({ maxLength: 16 }) }, { additionalProperties: true, maxProperties: 16 }),
  ],
  {},
);

export const ErrorResponse = Obj(
  {
    error: Obj({
      code: Type.String({ description: 'Stable code; see docs/errors.md.' }),
      message: Type.String(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  {},
);
export type ErrorResponse = Static<typeof ErrorResponse>;

export const Empty = Obj({});

export type { Static, TSchema };
