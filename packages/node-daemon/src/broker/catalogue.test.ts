import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BROKER_OPS } from '@ocs/protocol';
import { nodeWorkloads, type WorkloadContext } from '../workloads/index.js';
import { Broker, operationModules } from './broker.js';

const context = { d: {} } as unknown as WorkloadContext;

test('every broker op of the catalogue has a handler in the broker, and the broker handles nothing else', () => {
  const broker = new Broker(context, nodeWorkloads(context));
  assert.deepEqual(Object.keys(broker.handlers).sort(), Object.keys(BROKER_OPS).sort());
  for (const [op, h] of Object.entries(broker.handlers)) assert.equal(typeof h, 'function', op);
});

test('each op is carried out by the module of its catalogue kind, and each kind has exactly one module', () => {
  const modules = operationModules(context, nodeWorkloads(context));
  const owner = new Map<string, number>();
  modules.forEach((m, i) => {
    for (const k of m.kinds) {
      assert.equal(owner.has(k), false, `kind ${k} has two modules`);
      owner.set(k, i);
    }
  });
  for (const [op, spec] of Object.entries(BROKER_OPS)) {
    const i = owner.get(spec.kind);
    assert.notEqual(i, undefined, `no module for kind ${spec.kind} (${op})`);
    assert.ok(op in modules[i!]!.handlers, `${op} (kind ${spec.kind}) is not handled by its kind's module`);
  }
});
