import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { armor, Encrypter } from 'age-encryption';
import { generatePrivateKey, OcsError, parsePrivateKey, parsePublicKey, unwrapKey, wrapKey } from '@ocs/protocol';

// Interop is checked against the real age CLI (Debian's `age`), with keys made by ssh-keygen.
const dir = mkdtempSync(join(tmpdir(), 'ocs-wrap-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const path = (name: string) => join(dir, name);

function run(cmd: string, args: string[], input?: string | Uint8Array): Buffer {
  return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] });
}

run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'owner@test', '-f', path('owner')]);
run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'other@test', '-f', path('other')]);
run('age-keygen', ['-o', path('x25519')]);
const ownerPublic = parsePublicKey(readFileSync(path('owner.pub'), 'utf8'));
const ownerPrivate = parsePrivateKey(readFileSync(path('owner'), 'utf8'));
const otherPrivate = parsePrivateKey(readFileSync(path('other'), 'utf8'));
const x25519Recipient = run('age-keygen', ['-y', path('x25519')])
  .toString()
  .trim();

/** Asserts that unwrapping fails, and only ever as unwrap_failed. */
async function refuses(wrapped: string | Uint8Array, label: string, key = ownerPrivate): Promise<void> {
  await assert.rejects(
    unwrapKey(wrapped, key),
    (err: unknown) => {
      assert.ok(err instanceof OcsError, `${label}: rejected with ${String(err)}, not an OcsError`);
      assert.equal(err.code, 'unwrap_failed', label);
      return true;
    },
    label,
  );
}

/** The binary age file split at its header lines, to tamper with one part at a time. */
function parts(wrapped: string) {
  const file = Buffer.from(armor.decode(wrapped));
  const macAt = file.indexOf('\n--- ') + 1;
  const payloadAt = file.indexOf('\n', macAt) + 1;
  const header = file.subarray(0, macAt).toString().split('\n');
  return { file, header, mac: file.subarray(macAt, payloadAt), payload: file.subarray(payloadAt) };
}
function rebuild(header: string[], mac: Uint8Array, payload: Uint8Array): string {
  return armor.encode(Buffer.concat([Buffer.from(header.join('\n')), mac, payload]));
}
/** Replaces one base64 character with another valid one: flips bits without breaking the encoding. */
const flipChar = (s: string, at: number) => s.slice(0, at) + (s[at] === 'A' ? 'B' : 'A') + s.slice(at + 1);

test('we wrap to an ssh-keygen key, `age -d -i` with the private key file prints exactly the key', async () => {
  const dataKey = new Uint8Array(randomBytes(32));
  const wrapped = await wrapKey(dataKey, ownerPublic);
  assert.match(wrapped, /^-----BEGIN AGE ENCRYPTED FILE-----\n[A-Za-z0-9+/=\n]+-----END AGE ENCRYPTED FILE-----\n$/);
  writeFileSync(path('wrapped.age'), wrapped);
  assert.deepEqual(run('age', ['-d', '-i', path('owner'), path('wrapped.age')]), Buffer.from(dataKey));
  // And stdin, the way an owner would pipe it out of a JSON response.
  assert.deepEqual(run('age', ['-d', '-i', path('owner')], wrapped), Buffer.from(dataKey));
  assert.throws(() => run('age', ['-d', '-i', path('other'), path('wrapped.age')]), 'another key does not open it');
});

test("the stanza is the spec's: ssh-ed25519, tag = SHA-256 of the SSH wire blob (4 bytes), a 32-byte share, a 32-byte body", async () => {
  const { header } = parts(await wrapKey(new Uint8Array(32).fill(1), ownerPublic));
  assert.equal(header[0], 'age-encryption.org/v1');
  const [arrow, type, tag, share, ...extra] = header[1]!.split(' ');
  assert.deepEqual([arrow, type, extra], ['->', 'ssh-ed25519', []]);
  const blob = Buffer.from(readFileSync(path('owner.pub'), 'utf8').split(' ')[1]!, 'base64');
  assert.equal(tag, createHash('sha256').update(blob).digest().subarray(0, 4).toString('base64').replace(/=+$/, ''));
  assert.equal(Buffer.from(share!, 'base64').length, 32);
  assert.equal(Buffer.from(header[2]!, 'base64').length, 32);
  assert.equal(header[3], '');
});

test('`age -R owner.pub` encrypts, unwrapKey with the parsed private key returns the bytes (armored and binary)', async () => {
  const dataKey = randomBytes(32);
  const armored = run('age', ['-R', path('owner.pub'), '-a'], dataKey).toString();
  assert.deepEqual(Buffer.from(await unwrapKey(armored, ownerPrivate)), dataKey);

  const binary = run('age', ['-R', path('owner.pub')], dataKey);
  assert.deepEqual(Buffer.from(await unwrapKey(new Uint8Array(binary), ownerPrivate)), dataKey);
  assert.deepEqual(
    Buffer.from(await unwrapKey(new Uint8Array(Buffer.from(armored)), ownerPrivate)),
    dataKey,
    'armor as bytes',
  );
});

test('a file for several recipients opens with our key; the X25519 stanza is skipped', async () => {
  const dataKey = randomBytes(32);
  const wrapped = run(
    'age',
    ['-r', x25519Recipient, '-R', path('owner.pub'), '-R', path('other.pub'), '-a'],
    dataKey,
  ).toString();
  assert.deepEqual(Buffer.from(await unwrapKey(wrapped, ownerPrivate)), dataKey);
  assert.deepEqual(Buffer.from(await unwrapKey(wrapped, otherPrivate)), dataKey);
});

test("round trip in-process, for several key sizes, without touching the caller's key", async () => {
  const owner = generatePrivateKey();
  for (const size of [1, 16, 32, 64, 512]) {
    const dataKey = new Uint8Array(randomBytes(size));
    const copy = dataKey.slice();
    const wrapped = await wrapKey(dataKey, owner.publicKey);
    assert.deepEqual(dataKey, copy);
    assert.deepEqual(await unwrapKey(wrapped, owner), copy);
  }
  // Every wrap is fresh: ephemeral share, file key and nonce.
  const key = new Uint8Array(32);
  assert.notEqual(await wrapKey(key, owner.publicKey), await wrapKey(key, owner.publicKey));
  await assert.rejects(wrapKey(new Uint8Array(0), owner.publicKey), TypeError);
});

test("another owner's key fails with unwrap_failed, both for our files and age's", async () => {
  await refuses(await wrapKey(randomBytes(32), ownerPublic), 'ours, other key', otherPrivate);
  await refuses(
    run('age', ['-R', path('owner.pub'), '-a'], randomBytes(32)).toString(),
    'age CLI, other key',
    otherPrivate,
  );
  await refuses(await wrapKey(randomBytes(32), ownerPublic), 'fresh key', generatePrivateKey());
});

test('tampering anywhere fails with unwrap_failed', async () => {
  const wrapped = await wrapKey(randomBytes(32), ownerPublic);
  const { header, mac, payload } = parts(wrapped);
  assert.ok(
    await unwrapKey(rebuild(header, mac, payload), ownerPrivate),
    'control: taking apart and rebuilding alone is harmless',
  );
  const stanza = header[1]!;
  const shareAt = stanza.lastIndexOf(' ') + 10;
  const tagAt = stanza.indexOf(' ', 4) + 2;
  const flipped = (b: Uint8Array, at: number) => {
    const c = Buffer.from(b);
    c[at]! ^= 0x01;
    return c;
  };
  const cases: [string, string][] = [
    [
      'a bit in the stanza body',
      rebuild([header[0]!, stanza, flipChar(header[2]!, 5), ...header.slice(3)], mac, payload),
    ],
    [
      'a bit in the ephemeral share',
      rebuild([header[0]!, flipChar(stanza, shareAt), ...header.slice(2)], mac, payload),
    ],
    ['a bit in the tag', rebuild([header[0]!, flipChar(stanza, tagAt), ...header.slice(2)], mac, payload)],
    [
      'the stanza type',
      rebuild([header[0]!, stanza.replace('ssh-ed25519', 'ssh-ed25518'), ...header.slice(2)], mac, payload),
    ],
    ['an extra stanza argument', rebuild([header[0]!, `${stanza} extra`, ...header.slice(2)], mac, payload)],
    ['a bit in the header MAC', rebuild(header, flipped(mac, 6), payload)],
    ['a bit in the payload nonce', rebuild(header, mac, flipped(payload, 0))],
    ['a bit in the payload ciphertext', rebuild(header, mac, flipped(payload, 20))],
    ['a bit in the payload tag', rebuild(header, mac, flipped(payload, payload.length - 1))],
    ['a truncated payload', rebuild(header, mac, payload.subarray(0, payload.length - 1))],
    ['an extra payload byte', rebuild(header, mac, Buffer.concat([payload, Buffer.from([0])]))],
    ['no payload', rebuild(header, mac, new Uint8Array(0))],
  ];
  for (const [label, bad] of cases) {
    await refuses(bad, label);
    await refuses(armor.decode(bad), `${label} (binary)`);
  }
});

test('files without an ssh-ed25519 stanza for us fail with unwrap_failed', async () => {
  const dataKey = randomBytes(32);
  await refuses(run('age', ['-r', x25519Recipient, '-a'], dataKey).toString(), 'X25519 recipient (age1...)');
  await refuses(run('age', ['-R', path('other.pub'), '-a'], dataKey).toString(), 'ssh-ed25519 for another key');
  const scrypt = new Encrypter();
  scrypt.setPassphrase('a passphrase');
  scrypt.setScryptWorkFactor(2);
  await refuses(armor.encode(await scrypt.encrypt(dataKey)), 'passphrase (scrypt)');
});

test('garbage fails with unwrap_failed, never anything else', async () => {
  const good = await wrapKey(randomBytes(32), ownerPublic);
  for (const [label, input] of [
    ['empty string', ''],
    ['empty bytes', new Uint8Array(0)],
    ['not age', 'hello'],
    ['random bytes', new Uint8Array(randomBytes(200))],
    ['armor with bad base64', good.replace(/\n[A-Za-z]/, '\n$')],
    ['armor without footer', good.replace('-----END AGE ENCRYPTED FILE-----', '')],
    ['armor, truncated', good.slice(0, 120)],
    ['age intro then garbage', 'age-encryption.org/v1\n-> \n\n--- x\n'],
    ['binary intro then garbage', new TextEncoder().encode('age-encryption.org/v1\n-> ssh-ed25519 a b\n!!!\n')],
    ['huge string', '-----BEGIN AGE ENCRYPTED FILE-----\n' + 'A'.repeat(10_000_000)],
    ['huge bytes', new Uint8Array(10_000_000)],
    ['a number', 42 as unknown as string],
  ] as const) {
    await refuses(input, label);
  }
});

test('a destroyed private key is a programming error, not an unwrap failure', async () => {
  const owner = generatePrivateKey();
  const wrapped = await wrapKey(randomBytes(32), owner.publicKey);
  owner.destroy();
  await assert.rejects(unwrapKey(wrapped, owner), (err: unknown) => !(err instanceof OcsError));
});
