import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BROKER_OPS,
  NODE_OPERATIONS,
  NODE_ROUTES,
  SPACE_OPERATIONS,
  SPACE_ROUTES,
  brokerArgsOf,
  isReadOnlyOp,
  operationOfRoute,
  spaceRoute,
  type BrokerOp,
  type NodeOperationSpec,
  type OperationSpec,
} from '@ocs/protocol';

const ops = Object.entries(SPACE_OPERATIONS as Record<string, OperationSpec>);

test('read-only has one source: a read-only operation is a GET route and a read-only broker op, and only those', () => {
  for (const [name, o] of ops) {
    if (o.route) assert.equal(o.route.method === 'GET', o.readOnly, `${name}: GET exactly when read-only`);
    if (o.broker) assert.equal(isReadOnlyOp(name as BrokerOp), o.readOnly, name);
  }
});

test('the views: SPACE_ROUTES and BROKER_OPS hold exactly the entries with a route or a broker op, in order', () => {
  assert.deepEqual(
    SPACE_ROUTES.map((r) => operationOfRoute(r.id)?.name),
    ops.filter(([, o]) => o.route).map(([n]) => n),
  );
  assert.deepEqual(
    Object.keys(BROKER_OPS),
    ops.filter(([, o]) => o.broker).map(([n]) => n),
  );
  // A broker op answers with what its route responds (a 204 route's op answers `{}`).
  for (const [name, o] of ops) {
    if (!o.broker || !o.route) continue;
    const result = BROKER_OPS[name as BrokerOp].result;
    if (typeof o.route.response === 'object') assert.equal(result, o.route.response, name);
    else assert.deepEqual(result.properties, {}, name);
  }
});

test('route input maps to broker arguments: params and body merged unless the entry says how', () => {
  const op = (id: string) => operationOfRoute(id)!;
  const none = { params: {}, query: {}, body: undefined };
  assert.deepEqual(brokerArgsOf(op('spaceStatus'), none), {});
  assert.deepEqual(brokerArgsOf(op('startVm'), { ...none, params: { vm: 'v' }, body: {} }), { vm: 'v' });
  assert.deepEqual(brokerArgsOf(op('createVolume'), { ...none, body: { name: 'd', sizeBytes: 1 } }), {
    name: 'd',
    sizeBytes: 1,
  });
  assert.deepEqual(brokerArgsOf(op('containerLogs'), { ...none, params: { container: 'c' } }), {
    container: 'c',
    tail: 200,
  });
  assert.deepEqual(brokerArgsOf(op('vmConsole'), { ...none, params: { vm: 'v' }, query: { tail: 5 } }), {
    vm: 'v',
    tail: 5,
  });
  assert.deepEqual(brokerArgsOf(op('setEgress'), { ...none, body: { mode: 'none' } }), { egress: { mode: 'none' } });
  assert.deepEqual(brokerArgsOf(op('unpublishPort'), { ...none, params: { hostPort: '8080' } }), { hostPort: 8080 });
  assert.equal(spaceRoute('spaceStatus').path, '/status');
});

test('the node catalogue: NODE_ROUTES holds every entry in order, its id the name, GET exactly when read-only', () => {
  const nodeOps = Object.entries(NODE_OPERATIONS as Record<string, NodeOperationSpec>);
  assert.deepEqual(
    NODE_ROUTES.map((r) => r.id),
    nodeOps.map(([n]) => n),
  );
  for (const [name, o] of nodeOps)
    assert.equal(o.route.method === 'GET', o.readOnly, `${name}: GET exactly when read-only`);
});

test("broker 'route': the arguments are the route's path parameters and body, as one closed object", () => {
  const routed = ops.filter(([, o]) => o.broker === 'route');
  assert.ok(routed.length > 20, 'most operations take their route input as it is');
  for (const [name, o] of routed) {
    const args = BROKER_OPS[name as BrokerOp].args as {
      properties: Record<string, unknown>;
      additionalProperties?: boolean;
    };
    const body =
      typeof o.route!.body === 'object'
        ? (o.route!.body as unknown as { properties: Record<string, unknown> })
        : undefined;
    const expected = [...Object.keys(o.route!.params?.properties ?? {}), ...Object.keys(body?.properties ?? {})].sort();
    assert.deepEqual(Object.keys(args.properties).sort(), expected, name);
    assert.equal(args.additionalProperties, false, `${name}: closed`);
  }
});
