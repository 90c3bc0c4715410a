import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cipherImplementation } from './cipher.js';

const block = (name: string, driver: string, priority: number) =>
  `name         : ${name}\ndriver       : ${driver}\nmodule       : kernel\npriority     : ${priority}\ntype         : skcipher\n`;

test('the highest-priority xts(aes) driver decides; AES-NI is accelerated, the generic one is not', () => {
  const generic = [block('aes', 'aes-fixed-time', 100), block('xts(aes)', 'xts(ecb(aes-fixed-time))', 100)].join('\n');
  assert.deepEqual(cipherImplementation(generic), {
    algorithm: 'xts(aes)',
    driver: 'xts(ecb(aes-fixed-time))',
    accelerated: false,
  });
  const ni = [block('xts(aes)', 'xts(ecb(aes-fixed-time))', 100), block('xts(aes)', 'xts-aes-aesni', 401)].join('\n');
  assert.deepEqual(cipherImplementation(ni), { algorithm: 'xts(aes)', driver: 'xts-aes-aesni', accelerated: true });
});

test('before xts(aes) was first used, the AES core it will use decides', () => {
  const text = [block('aes', 'aes-generic', 100), block('aes', 'aes-aesni', 300)].join('\n');
  assert.deepEqual(cipherImplementation(text), {
    algorithm: 'xts(aes)',
    driver: 'xts over aes-aesni',
    accelerated: true,
  });
});

test('this kernel reports some implementation', () => {
  const c = cipherImplementation();
  assert.equal(c.algorithm, 'xts(aes)');
  assert.notEqual(c.driver, '');
});
