import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as nodeSign,
  verify as nodeVerify,
} from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Ed25519PrivateKey,
  Ed25519PublicKey,
  generatePrivateKey,
  OcsError,
  parsePrivateKey,
  parsePublicKey,
  verifyEd25519,
} from '@ocs/protocol';

// Keys come from the real tools, made fresh in a temp dir: no key material is checked in.
const dir = mkdtempSync(join(tmpdir(), 'ocs-keys-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[], input?: string | Uint8Array): string {
  return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}
const read = (name: string) => readFileSync(join(dir, name), 'utf8');

/** `ssh-keygen -t <type>` into dir/name; returns [private file text, .pub text]. */
function sshKeygen(name: string, ...args: string[]): [string, string] {
  run('ssh-keygen', ['-q', '-C', `${name}@test`, '-f', join(dir, name), ...args]);
  return [read(name), read(`${name}.pub`)];
}
function openssl(name: string, ...args: string[]): string {
  run('openssl', [...args, '-out', join(dir, name)]);
  return read(name);
}

const [sshPrivate, sshPublic] = sshKeygen('ed', '-t', 'ed25519', '-N', '');
const [sshEncrypted] = sshKeygen('ed-pass', '-t', 'ed25519', '-N', 'correct horse battery');
const [rsaPrivate, rsaPublic] = sshKeygen('rsa', '-t', 'rsa', '-b', '2048', '-N', '');
const [rsaEncrypted] = sshKeygen('rsa-pass', '-t', 'rsa', '-b', '2048', '-N', 'correct horse battery');
const [ecdsaPrivate, ecdsaPublic] = sshKeygen('ecdsa', '-t', 'ecdsa', '-N', '');
const opensslEd = openssl('ossl-ed.pem', 'genpkey', '-algorithm', 'ed25519');
const opensslEdSpki = run('openssl', ['pkey', '-in', join(dir, 'ossl-ed.pem'), '-pubout']);
const opensslEdEncrypted = openssl(
  'ossl-ed-enc.pem',
  'pkcs8',
  '-topk8',
  '-in',
  join(dir, 'ossl-ed.pem'),
  '-v2',
  'aes-256-cbc',
  '-passout',
  'pass:secret',
);
const opensslRsa = openssl('ossl-rsa.pem', 'genpkey', '-algorithm', 'rsa', '-pkeyopt', 'rsa_keygen_bits:2048');
const opensslRsaTraditional = openssl('ossl-rsa-trad.pem', 'rsa', '-in', join(dir, 'ossl-rsa.pem'), '-traditional');
const opensslEc = openssl('ossl-ec.pem', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256');
const opensslEcTraditional = openssl('ossl-ec-trad.pem', 'ec', '-in', join(dir, 'ossl-ec.pem'));
const opensslX25519 = openssl('ossl-x25519.pem', 'genpkey', '-algorithm', 'x25519');
const opensslEd448 = openssl('ossl-ed448.pem', 'genpkey', '-algorithm', 'ed448');
const spkiOf = (pem: string) => createPublicKey(pem).export({ type: 'spki', format: 'pem' }).toString();

/** Every refusal is an OcsError with the expected code and a message that carries no key text. */
function refuses(fn: () => unknown, code: string, label = code): void {
  assert.throws(
    fn,
    (err: unknown) => {
      assert.ok(err instanceof OcsError, `${label}: threw ${String(err)}, not an OcsError`);
      assert.equal(err.code, code, `${label}: ${err.message}`);
      assert.doesNotMatch(err.message, /[A-Za-z0-9+/_-]{24,}/, `${label}: message looks like it echoes key material`);
      return true;
    },
    label,
  );
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64url');
function sshString(...parts: (string | Uint8Array)[]): Buffer {
  return Buffer.concat(
    parts.map((p) => {
      const b = typeof p === 'string' ? Buffer.from(p) : Buffer.from(p);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b]);
    }),
  );
}
/** The decoded body of a PEM / OpenSSH armor, and the way back. */
const unarmor = (pem: string) => Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
function rearmor(label: string, body: Uint8Array, width = 70): string {
  const text = Buffer.from(body).toString('base64');
  const lines = text.match(new RegExp(`.{1,${width}}`, 'g')) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

// openssh-key-v1 with cipher/kdf "none": magic(15) + "none"(8) + "none"(8) + kdfoptions(4) +
// count(4) + public blob(4+51) + section length(4) puts the first check integer at byte 98.
const CHECKINT_OFFSET = 98;
// The key count sits just before the public blob: 63 bytes earlier. After the check integers
// come the type (4+11), the public key (4+32) and the length of seed||pub (4).
const SEED_OFFSET = CHECKINT_OFFSET + 8 + 15 + 36 + 4;

test('an ssh-keygen ed25519 key: private and .pub agree, fingerprint is ssh-keygen -lf, .pub line round-trips', () => {
  const priv = parsePrivateKey(sshPrivate);
  const pub = parsePublicKey(sshPublic);
  assert.ok(pub.equals(priv.publicKey));
  assert.equal(pub.bytes.length, 32);
  const listed = run('ssh-keygen', ['-lf', join(dir, 'ed.pub')]).split(' ');
  assert.equal(pub.fingerprint(), listed[1]);
  const [type, data, comment] = sshPublic.trim().split(' ');
  assert.equal(pub.toOpenSsh(), `${type} ${data}`);
  assert.equal(pub.toOpenSsh(comment), sshPublic.trim());
  assert.deepEqual(Buffer.from(pub.sshWireBlob()), Buffer.from(data!, 'base64'));
  // A comment with spaces, and no comment at all, both parse.
  assert.ok(parsePublicKey(`${type} ${data} my laptop key`).equals(pub));
  assert.ok(parsePublicKey(`${type} ${data}`).equals(pub));
});

test("our OpenSSH private key file: ssh-keygen reads it, and it is ssh-keygen's own bytes but for the check integers", () => {
  const priv = parsePrivateKey(sshPrivate);
  const ours = priv.toOpenSshPrivate('ed@test');
  writeFileSync(join(dir, 'ours'), ours, { mode: 0o600 });
  assert.equal(run('ssh-keygen', ['-y', '-f', join(dir, 'ours')]).trim(), priv.publicKey.toOpenSsh('ed@test'));
  assert.equal(run('ssh-keygen', ['-lf', join(dir, 'ours')]).split(' ')[1], priv.publicKey.fingerprint());

  const theirs = unarmor(sshPrivate);
  const mine = unarmor(ours);
  assert.equal(mine.length, theirs.length);
  mine.copy(theirs, CHECKINT_OFFSET, CHECKINT_OFFSET, CHECKINT_OFFSET + 8);
  assert.deepEqual(mine, theirs);
  assert.equal(ours.split('\n')[1]!.length, 70, 'OpenSSH wraps at 70 columns');
  assert.ok(parsePrivateKey(ours).publicKey.equals(priv.publicKey));
});

test('passphrase-protected keys are key_encrypted, other types key_unsupported even when encrypted', () => {
  refuses(() => parsePrivateKey(sshEncrypted), 'key_encrypted', 'ssh-keygen -N passphrase');
  refuses(() => parsePrivateKey(opensslEdEncrypted), 'key_encrypted', 'openssl pkcs8 -topk8 -v2');
  refuses(() => parsePrivateKey(rsaEncrypted), 'key_unsupported', 'encrypted OpenSSH RSA');
});

test('RSA and ECDSA keys from ssh-keygen are key_unsupported, private and public', () => {
  refuses(() => parsePrivateKey(rsaPrivate), 'key_unsupported', 'ssh rsa private');
  refuses(() => parsePublicKey(rsaPublic), 'key_unsupported', 'ssh-rsa line');
  refuses(() => parsePrivateKey(ecdsaPrivate), 'key_unsupported', 'ssh ecdsa private');
  refuses(() => parsePublicKey(ecdsaPublic), 'key_unsupported', 'ecdsa-sha2-nistp256 line');
});

test('openssl genpkey ed25519: PKCS#8 parses, SPKI parses, and our PEM goes back through openssl', () => {
  const priv = parsePrivateKey(opensslEd);
  assert.ok(parsePublicKey(opensslEdSpki).equals(priv.publicKey));
  const ours = priv.toPkcs8Pem();
  assert.equal(ours.replace(/\s/g, ''), opensslEd.replace(/\s/g, ''), 'same DER as openssl writes');
  assert.equal(run('openssl', ['pkey', '-pubout'], ours), opensslEdSpki);
});

test('RSA, EC, X25519 and Ed448 keys from openssl are key_unsupported', () => {
  for (const [label, pem] of [
    ['rsa pkcs8', opensslRsa],
    ['rsa traditional', opensslRsaTraditional],
    ['ec pkcs8', opensslEc],
    ['ec traditional', opensslEcTraditional],
    ['x25519', opensslX25519],
    ['ed448', opensslEd448],
  ] as const) {
    refuses(() => parsePrivateKey(pem), 'key_unsupported', `${label} private`);
    refuses(() => parsePublicKey(spkiOf(pem)), 'key_unsupported', `${label} spki`);
  }
});

test('node:crypto ed25519 keys: PKCS#8 PEM, JWKs, SPKI and raw x all parse to the same key', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  const priv = parsePrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const expected = Buffer.from(jwk.x!, 'base64url');
  assert.deepEqual(Buffer.from(priv.publicKey.bytes), expected);
  assert.ok(parsePrivateKey(jwk).publicKey.equals(priv.publicKey));
  assert.ok(parsePrivateKey(JSON.stringify(jwk)).publicKey.equals(priv.publicKey));
  assert.ok(parsePublicKey(publicKey.export({ format: 'jwk' })).equals(priv.publicKey));
  assert.ok(parsePublicKey(publicKey.export({ type: 'spki', format: 'pem' }).toString()).equals(priv.publicKey));
  assert.ok(parsePublicKey(jwk.x!).equals(priv.publicKey));
  assert.ok(parsePublicKey(expected.toString('base64')).equals(priv.publicKey), 'standard base64 with padding');
  assert.ok(
    parsePublicKey(expected.toString('base64').replace(/=+$/, '')).equals(priv.publicKey),
    'standard, unpadded',
  );
  assert.ok(parsePublicKey(new Uint8Array(expected)).equals(priv.publicKey), 'raw bytes');
  assert.deepEqual(priv.toJwk(), { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d });
  assert.deepEqual(priv.publicKey.toJwk(), { kty: 'OKP', crv: 'Ed25519', x: jwk.x });
  // And node reads ours.
  assert.deepEqual(createPrivateKey(priv.toPkcs8Pem()).export({ format: 'jwk' }), jwk);
  assert.deepEqual(createPrivateKey({ key: priv.toJwk(), format: 'jwk' }).export({ format: 'jwk' }), jwk);
});

test('RFC 8410 §10.3: the v2 PKCS#8 example (attributes and public key attached) parses', () => {
  const v2 = [
    '-----BEGIN PRIVATE KEY-----',
    'MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC',
    'oB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrB',
    'Z9w7lshQhqowtrbLDFw4rXAxZuE=',
    '-----END PRIVATE KEY-----',
  ].join('\n');
  const spki =
    '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----';
  assert.ok(parsePrivateKey(v2).publicKey.equals(parsePublicKey(spki)));

  // The same structure with another key's public half is refused.
  const der = unarmor(v2);
  der[der.length - 1]! ^= 1;
  refuses(() => parsePrivateKey(rearmor('PRIVATE KEY', der, 64)), 'key_malformed', 'v2 with a mismatched public key');
});

test('RFC 8032 §7.1 test 1: seed to public key and signature', () => {
  const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex');
  const jwk = { kty: 'OKP', crv: 'Ed25519', d: b64url(seed), x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' };
  const key = parsePrivateKey(jwk);
  assert.equal(
    Buffer.from(key.publicKey.bytes).toString('hex'),
    'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
  );
  assert.equal(
    Buffer.from(key.sign(new Uint8Array(0))).toString('hex'),
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  );
  assert.ok(Ed25519PrivateKey.fromSeed(seed).publicKey.equals(key.publicKey));
});

test('signatures interoperate with node:crypto in both directions', () => {
  const message = new TextEncoder().encode('owner proves possession');
  const ours = generatePrivateKey();
  const nodePublic = createPublicKey({ key: ours.publicKey.toJwk(), format: 'jwk' });
  assert.ok(nodeVerify(null, message, nodePublic, ours.sign(message)));

  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const theirs = parsePublicKey(publicKey.export({ format: 'jwk' }));
  const signature = nodeSign(null, message, privateKey);
  assert.ok(verifyEd25519(signature, message, theirs));
  assert.ok(verifyEd25519(signature, message, theirs.bytes));
  assert.equal(verifyEd25519(signature, new TextEncoder().encode('something else'), theirs), false);
  assert.equal(verifyEd25519(signature, message, ours.publicKey), false);
  // Garbage never throws, it just does not verify.
  assert.equal(verifyEd25519(signature.subarray(1), message, theirs), false);
  assert.equal(verifyEd25519(new Uint8Array(64), message, theirs), false);
  assert.equal(verifyEd25519(signature, message, new Uint8Array(31)), false);
});

test('round trips through every public format, and equality', () => {
  const key = generatePrivateKey();
  const pub = key.publicKey;
  for (const form of [
    pub.toBase64url(),
    pub.toJwk(),
    JSON.stringify(pub.toJwk()),
    pub.toOpenSsh(),
    pub.toOpenSsh('a comment'),
    b64(pub.bytes),
    pub,
  ]) {
    assert.ok(parsePublicKey(form).equals(pub));
  }
  for (const form of [key.toPkcs8Pem(), key.toOpenSshPrivate(), key.toJwk(), JSON.stringify(key.toJwk()), key]) {
    const back = parsePrivateKey(form);
    assert.ok(back.publicKey.equals(pub));
    assert.deepEqual(back.sign(new Uint8Array([1, 2, 3])), key.sign(new Uint8Array([1, 2, 3])));
  }
  assert.equal(pub.equals(generatePrivateKey().publicKey), false);
  assert.match(pub.fingerprint(), /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(JSON.stringify({ pub }), JSON.stringify({ pub: pub.toBase64url() }));
});

test('the seed stays private: not in JSON, copied on export, zeroed by destroy', () => {
  const key = generatePrivateKey();
  const seed = key.exportSeed();
  const d = b64url(seed);
  assert.doesNotMatch(JSON.stringify(key), new RegExp(d));
  assert.deepEqual(JSON.parse(JSON.stringify(key)), { publicKey: key.publicKey.toBase64url() });
  seed.fill(0);
  assert.equal(key.toJwk().d, d, 'zeroing the export does not touch the key');
  key.destroy();
  assert.ok(key.destroyed);
  assert.throws(() => key.sign(new Uint8Array(1)));
  assert.throws(() => key.exportSeed());
  assert.throws(() => key.toPkcs8Pem());
  key.destroy();
});

// --- Hostile and malformed input -----------------------------------------------------------

const good = generatePrivateKey();
const goodBlob = good.publicKey.sshWireBlob();
const goodX = good.publicKey.toBase64url();
const goodOpenSsh = good.toOpenSshPrivate('c');
const rsaBlob = Buffer.from(rsaPublic.split(' ')[1]!, 'base64');
function patchOpenSsh(patch: (body: Buffer) => void): string {
  const body = unarmor(goodOpenSsh);
  patch(body);
  return rearmor('OPENSSH PRIVATE KEY', body);
}
const identityPoint = new Uint8Array(32);
identityPoint[0] = 1; // y = 1: the neutral element, of order 1
const notOnCurve = Buffer.from('0200000000000000000000000000000000000000000000000000000000000000', 'hex');
const pkcs8 = unarmor(good.toPkcs8Pem());
const throwingObject = new Proxy(
  {},
  {
    get() {
      throw new RangeError('hostile getter');
    },
  },
);

const publicCases: [string, unknown, string][] = [
  ['empty', '', 'key_malformed'],
  ['whitespace', ' \n\t ', 'key_malformed'],
  ['truncated base64url', goodX.slice(0, 30), 'key_malformed'],
  ['one base64 char too many', goodX + 'A', 'key_malformed'],
  ['31 bytes', b64url(new Uint8Array(31).fill(7)), 'key_malformed'],
  ['33 bytes', b64url(new Uint8Array(33).fill(7)), 'key_malformed'],
  ['non-canonical trailing bits', goodX.slice(0, 42) + String.fromCharCode(goodX.charCodeAt(42) ^ 1), 'key_malformed'],
  ['mixed alphabets', '+' + goodX.slice(1, 42) + '_', 'key_malformed'],
  ['bad characters', '!'.repeat(43), 'key_malformed'],
  ['trailing garbage after base64url', goodX + '!!', 'key_malformed'],
  ['not on the curve', b64url(notOnCurve), 'key_malformed'],
  ['small-order point', b64url(identityPoint), 'key_malformed'],
  ['31 raw bytes', new Uint8Array(31), 'key_malformed'],
  ['JWK crv X25519', { kty: 'OKP', crv: 'X25519', x: goodX }, 'key_unsupported'],
  ['JWK crv Ed448', { kty: 'OKP', crv: 'Ed448', x: 'A'.repeat(76) }, 'key_unsupported'],
  ['JWK kty RSA', { kty: 'RSA', n: 'AQAB', e: 'AQAB' }, 'key_unsupported'],
  ['JWK kty EC', { kty: 'EC', crv: 'P-256', x: goodX, y: goodX }, 'key_unsupported'],
  ['JWK alg ES256', { kty: 'OKP', crv: 'Ed25519', x: goodX, alg: 'ES256' }, 'key_unsupported'],
  ['JWK without kty', { crv: 'Ed25519', x: goodX }, 'key_malformed'],
  ['JWK without crv', { kty: 'OKP', x: goodX }, 'key_malformed'],
  ['JWK without x', { kty: 'OKP', crv: 'Ed25519' }, 'key_malformed'],
  ['JWK x is a number', { kty: 'OKP', crv: 'Ed25519', x: 42 }, 'key_malformed'],
  ['JWK x padded', { kty: 'OKP', crv: 'Ed25519', x: goodX + '=' }, 'key_malformed'],
  ['JWK x 31 bytes', { kty: 'OKP', crv: 'Ed25519', x: b64url(new Uint8Array(31)) }, 'key_malformed'],
  ['private JWK where a public key belongs', good.toJwk(), 'key_unsupported'],
  ['JSON broken', '{"kty":"OKP","crv":', 'key_malformed'],
  ['JSON array', '[]', 'key_malformed'],
  ['JSON null', 'null', 'key_malformed'],
  ['null', null, 'key_malformed'],
  ['undefined', undefined, 'key_malformed'],
  ['number', 42, 'key_malformed'],
  ['array', [goodX], 'key_malformed'],
  ['hostile getters', throwingObject, 'key_malformed'],
  ['ssh-ed25519 truncated blob', `ssh-ed25519 ${b64(goodBlob.subarray(0, 40))}`, 'key_malformed'],
  [
    'ssh-ed25519 blob with trailing bytes',
    `ssh-ed25519 ${b64(Buffer.concat([goodBlob, Buffer.from([0])]))}`,
    'key_malformed',
  ],
  ['ssh-ed25519 line carrying an RSA blob', `ssh-ed25519 ${b64(rsaBlob)}`, 'key_malformed'],
  [
    'ssh-ed25519 with a 33-byte key',
    `ssh-ed25519 ${b64(sshString('ssh-ed25519', new Uint8Array(33)))}`,
    'key_malformed',
  ],
  ['ssh-ed25519 without data', 'ssh-ed25519 ', 'key_malformed'],
  ['ssh-ed25519 with bad base64', 'ssh-ed25519 AAAA$AAA', 'key_malformed'],
  [
    'sk-ssh-ed25519 (FIDO)',
    `sk-ssh-ed25519@openssh.com ${b64(sshString('sk-ssh-ed25519@openssh.com', new Uint8Array(32), 'ssh:'))}`,
    'key_unsupported',
  ],
  [
    'ssh-ed25519 certificate',
    `ssh-ed25519-cert-v01@openssh.com ${b64(sshString('ssh-ed25519-cert-v01@openssh.com', new Uint8Array(32)))}`,
    'key_unsupported',
  ],
  ['authorized_keys options', `restrict ${good.publicKey.toOpenSsh()}`, 'key_malformed'],
  ['two keys', `${good.publicKey.toOpenSsh()}\n${good.publicKey.toOpenSsh()}`, 'key_malformed'],
  ['a PEM private key', good.toPkcs8Pem(), 'key_unsupported'],
  ['a PEM certificate label', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', 'key_unsupported'],
  ['SPKI with trailing garbage text', `${spkiOf(good.toPkcs8Pem())}garbage`, 'key_malformed'],
  ['huge input', 'A'.repeat(10_000_000), 'key_malformed'],
  ['huge JWK', { kty: 'OKP', crv: 'Ed25519', x: 'A'.repeat(1_000_000) }, 'key_malformed'],
];

test('hostile public key inputs are refused with their code, and only ever with an OcsError', () => {
  for (const [label, input, code] of publicCases) refuses(() => parsePublicKey(input as string), code, label);
});

const privateCases: [string, unknown, string][] = [
  ['empty', '', 'key_malformed'],
  ['raw base64url', goodX, 'key_malformed'],
  ['an OpenSSH public key line', good.publicKey.toOpenSsh(), 'key_unsupported'],
  ['an SPKI public key', spkiOf(good.toPkcs8Pem()), 'key_unsupported'],
  ['a public key object', good.publicKey, 'key_unsupported'],
  ['a public JWK', good.publicKey.toJwk(), 'key_unsupported'],
  ['JWK d of 31 bytes', { ...good.toJwk(), d: b64url(new Uint8Array(31)) }, 'key_malformed'],
  [
    'JWK d and x of different keys',
    { ...good.toJwk(), x: generatePrivateKey().publicKey.toBase64url() },
    'key_malformed',
  ],
  ['JWK without x', { kty: 'OKP', crv: 'Ed25519', d: good.toJwk().d }, 'key_malformed'],
  ['JWK crv X25519', { ...good.toJwk(), crv: 'X25519' }, 'key_unsupported'],
  ['OpenSSH with mismatched check integers', patchOpenSsh((b) => void (b[CHECKINT_OFFSET + 3]! ^= 1)), 'key_malformed'],
  [
    'OpenSSH whose seed does not match its public key',
    patchOpenSsh((b) => void (b[SEED_OFFSET]! ^= 1)),
    'key_malformed',
  ],
  ['OpenSSH with bad padding', patchOpenSsh((b) => void (b[b.length - 1] = 9)), 'key_malformed'],
  ['OpenSSH truncated', rearmor('OPENSSH PRIVATE KEY', unarmor(goodOpenSsh).subarray(0, 150)), 'key_malformed'],
  [
    'OpenSSH with a huge string length',
    patchOpenSsh((b) => b.writeUInt32BE(0xffffffff, CHECKINT_OFFSET - 4)),
    'key_malformed',
  ],
  ['OpenSSH claiming two keys', patchOpenSsh((b) => b.writeUInt32BE(2, CHECKINT_OFFSET - 63)), 'key_unsupported'],
  ['OpenSSH wrong magic', patchOpenSsh((b) => void (b[0] = 0x4f)), 'key_malformed'],
  [
    'OpenSSH with trailing bytes',
    rearmor('OPENSSH PRIVATE KEY', Buffer.concat([unarmor(goodOpenSsh), Buffer.from([0])])),
    'key_malformed',
  ],
  [
    'PKCS#8 with trailing DER bytes',
    rearmor('PRIVATE KEY', Buffer.concat([pkcs8, Buffer.from([0, 0])]), 64),
    'key_malformed',
  ],
  ['PKCS#8 truncated', rearmor('PRIVATE KEY', pkcs8.subarray(0, 40), 64), 'key_malformed'],
  [
    'PKCS#8 with a 31-byte seed',
    rearmor(
      'PRIVATE KEY',
      Buffer.concat([Buffer.from('302d020100300506032b65700421041f', 'hex'), Buffer.alloc(31, 1)]),
      64,
    ),
    'key_malformed',
  ],
  [
    'PKCS#8 version 2',
    rearmor('PRIVATE KEY', Buffer.concat([pkcs8.subarray(0, 4), Buffer.from([2]), pkcs8.subarray(5)]), 64),
    'key_malformed',
  ],
  ['PEM with garbage after END', `${good.toPkcs8Pem()}trailing garbage`, 'key_malformed'],
  [
    'PEM with BEGIN/END labels that differ',
    good.toPkcs8Pem().replace('END PRIVATE KEY', 'END PUBLIC KEY'),
    'key_malformed',
  ],
  ['PEM with bad base64', '-----BEGIN PRIVATE KEY-----\nMC4CAQAw$$$$\n-----END PRIVATE KEY-----', 'key_malformed'],
  ['PEM with an empty body', '-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----', 'key_malformed'],
  ['two PEM blocks', good.toPkcs8Pem() + good.toPkcs8Pem(), 'key_malformed'],
  ['an unknown PEM label', '-----BEGIN SECRET SAUCE-----\nAAAA\n-----END SECRET SAUCE-----', 'key_unsupported'],
  ['huge input', '-----BEGIN PRIVATE KEY-----\n' + 'A'.repeat(10_000_000), 'key_malformed'],
  ['null', null, 'key_malformed'],
  ['hostile getters', throwingObject, 'key_malformed'],
];

test('hostile private key inputs are refused with their code, and only ever with an OcsError', () => {
  for (const [label, input, code] of privateCases) refuses(() => parsePrivateKey(input as string), code, label);
});

test('random corruption of valid keys never throws anything but OcsError', () => {
  const inputs = [good.toPkcs8Pem(), goodOpenSsh, sshPublic, JSON.stringify(good.toJwk()), goodX, opensslEdSpki];
  let seed = 0x2545f491;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  for (let i = 0; i < 3000; i++) {
    const input = inputs[i % inputs.length]!;
    let mutated: string;
    if (i % 3 === 0) {
      // Corrupt the decoded bytes, so the DER / SSH parsers (not just base64) see the damage.
      const isPem = input.startsWith('-----');
      const label = /-----BEGIN ([A-Z ]+)-----/.exec(input)?.[1] ?? '';
      const bytes = isPem ? unarmor(input) : Buffer.from(input);
      for (let k = 0; k <= rand(3); k++) bytes[rand(bytes.length)] = rand(256);
      mutated = isPem
        ? rearmor(label, i % 2 ? bytes : bytes.subarray(0, rand(bytes.length)))
        : bytes.toString('latin1');
    } else {
      const at = rand(input.length);
      mutated = input.slice(0, at) + String.fromCharCode(rand(128)) + input.slice(at + (i % 2));
    }
    for (const parse of [parsePublicKey, parsePrivateKey]) {
      try {
        parse(mutated);
      } catch (err) {
        assert.ok(err instanceof OcsError, `threw ${String(err)} for ${JSON.stringify(mutated)}`);
        assert.match(err.code, /^key_(malformed|unsupported|encrypted)$/);
      }
    }
  }
});

test('Ed25519PublicKey.fromBytes checks the point and copies the bytes', () => {
  const bytes = new Uint8Array(good.publicKey.bytes);
  const pub = Ed25519PublicKey.fromBytes(bytes);
  bytes.fill(0);
  assert.ok(pub.equals(good.publicKey));
  refuses(() => Ed25519PublicKey.fromBytes(identityPoint), 'key_malformed');
  refuses(() => Ed25519PrivateKey.fromSeed(new Uint8Array(33)), 'key_malformed');
});
