import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { Writable } from 'node:stream';
import { createLogger } from './logger.js';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { lines, logger: createLogger({ destination }) };
}

test('every line carries pid, hostname and the bindings of its child logger, each once', () => {
  const { lines, logger } = capture();
  logger.child({ nodeId: 'node-a1' }).child({ spaceId: 'sp_1', spacePid: 4242 }).info('hello');
  assert.equal(lines.length, 1);
  const line = lines[0] as string;
  const rec = JSON.parse(line) as Record<string, unknown>;
  assert.equal(rec.pid, process.pid);
  assert.equal(rec.hostname, hostname());
  assert.equal(rec.nodeId, 'node-a1');
  assert.equal(rec.spaceId, 'sp_1');
  assert.equal(rec.spacePid, 4242);
  assert.equal(line.match(/"pid":/g)?.length, 1, 'a duplicate key would leave the reader guessing');
});

test('secret-named fields are redacted at the top level and one level down', () => {
  const { lines, logger } = capture();
  const secrets = {
    token: 'eyJ.SECRET-token.sig',
    key: 'SECRET-key-bytes',
    sealedKey: 'SECRET-sealed',
    wrappedKey: 'SECRET-wrapped',
    privateKey: 'SECRET-private',
    secret: 'SECRET-secret',
    password: 'SECRET-password',
    authorization: 'Bearer SECRET-bearer',
    signature: 'sig1=:SECRET-signature:',
    cookie: 'session=SECRET-cookie',
  };
  logger.info({ ...secrets, spaceId: 'sp_1' }, 'top level');
  logger.info({ req: { ...secrets }, spaceId: 'sp_1' }, 'nested');
  logger.info({ req: { headers: { authorization: secrets.authorization, cookie: secrets.cookie } } }, 'headers');
  assert.equal(lines.length, 3);
  assert.equal(lines.join('').includes('SECRET'), false, 'a secret reached the log');
  const [top, nested, headers] = lines.map((l) => JSON.parse(l) as Record<string, Record<string, unknown>>);
  for (const field of Object.keys(secrets)) {
    assert.equal(top?.[field], '[redacted]', `top-level ${field}`);
    assert.equal(nested?.req?.[field], '[redacted]', `req.${field}`);
  }
  assert.deepEqual(headers?.req?.headers, { authorization: '[redacted]', cookie: '[redacted]' });
  assert.equal(top?.spaceId, 'sp_1', 'other fields stay');
});
