import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BROKER_OPS } from '@ocs/protocol';
import { Broker } from './broker.js';
import type { BrokerContext } from './context.js';

test('every broker op of the catalogue has a handler in the broker, and the broker handles nothing else', () => {
  const broker = new Broker({ d: {} } as unknown as BrokerContext);
  const handlers = (broker as unknown as { handlers: Record<string, unknown> }).handlers;
  assert.deepEqual(Object.keys(handlers).sort(), Object.keys(BROKER_OPS).sort());
  for (const [op, h] of Object.entries(handlers)) assert.equal(typeof h, 'function', op);
});
