// Lint catches real bugs and keeps the process boundaries honest; formatting is Prettier's job.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

const nodeBuiltins = [
  'node:*',
  'fs',
  'fs/*',
  'path',
  'os',
  'child_process',
  'net',
  'http',
  'https',
  'http2',
  'dgram',
  'worker_threads',
  'crypto',
];

/** Our packages, each with its subpaths. */
const ours = (...names) => names.flatMap((n) => [`@ocs/${n}`, `@ocs/${n}/*`]);

/** Test support (`testing/`, docs/testing.md): production code never imports it. */
const testSupport = {
  group: ['@ocs/*/testing', '@ocs/*/testing/*'],
  message: 'test support is for tests, e2e and bench only (docs/testing.md)',
};

/**
 * A package's boundary: imports matching `group` are refused in `files`, tests included unless
 * `ignores` says. `more` adds patterns (a folder's own boundary inside its package's: the last
 * config matching a file decides, so it repeats the package's).
 */
const boundary = (files, group, message, ignores = [], more = []) => ({
  files: [files],
  ignores,
  rules: { 'no-restricted-imports': ['error', { patterns: [{ group, message }, ...more, testSupport] }] },
});
// The SDK is the one client of the node API: the daemon links it only to be a client itself (a
// move's source talks to its target, spaces/move-client.ts), never the CLI or the space process.
const daemonLinksNoClient = [
  ours('space-api', 'cli'),
  'the daemon runs the space process as a program (its bundle) and links neither it nor the CLI',
];

export default tseslint.config(
  { ignores: ['**/dist/**', '**/dist-test/**', '**/node_modules/**', 'docs/**', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      'no-console': 'error',
      'import-x/no-extraneous-dependencies': [
        'error',
        { devDependencies: ['**/*.test.ts', '**/test/**', '**/testing/**'] },
      ],
    },
  },
  // Tests, benchmarks and e2e print on purpose (the CLI writes to its streams, not the console).
  {
    files: ['**/*.test.ts', '**/test/**/*.ts', 'e2e/**/*.ts', 'bench/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
  // node:test's test() returns a promise the runner itself awaits.
  {
    files: ['**/*.test.ts', '**/test/**/*.ts', 'e2e/**/*.ts'],
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] },
          ],
        },
      ],
    },
  },
  // Package boundaries: what each package may not import (a package and its subpaths).
  boundary(
    'packages/protocol/src/**/*.ts',
    [...nodeBuiltins, 'dockerode', 'better-sqlite3', '@ocs/*', 'koa', 'pino'],
    'protocol has no I/O and depends on no other package of ours: wire contracts only, usable in a browser',
  ),
  boundary(
    'packages/protocol/node/**/*.ts',
    [...nodeBuiltins, '!node:crypto', 'dockerode', 'better-sqlite3', '@ocs/*', '!@ocs/protocol', 'koa', 'pino'],
    'the Node entry of the protocol (@ocs/protocol/node) adds native crypto, no other I/O',
    ['**/*.test.ts'],
  ),
  boundary('packages/node-daemon/src/**/*.ts', ...daemonLinksNoClient),
  // Inside the daemon, one way only: broker → workloads → spaces (layout, networks), never back.
  boundary(
    'packages/node-daemon/src/spaces/**/*.ts',
    ...daemonLinksNoClient,
    [],
    [
      {
        group: ['../workloads/*', '../broker/*'],
        message: "a space's life sees its workloads through the `Workloads` interface (spaces/service.ts)",
      },
    ],
  ),
  boundary(
    'packages/node-daemon/src/workloads/**/*.ts',
    ...daemonLinksNoClient,
    [],
    [{ group: ['../broker/*'], message: 'the workload kinds do not know the gate that dispatches to them' }],
  ),
  boundary(
    'packages/space-api/src/**/*.ts',
    [...ours('host', 'node-daemon'), 'dockerode', '@unraid/libvirt'],
    'the space API is unprivileged: it asks the daemon broker for host actions',
  ),
  boundary(
    'packages/http/src/**/*.ts',
    [...ours('host', 'node-daemon', 'space-api', 'client', 'cli'), 'dockerode', '@unraid/libvirt', 'better-sqlite3'],
    'the HTTP pipeline is shared by both servers: it knows the protocol and Koa, nothing of a process',
  ),
  boundary(
    'packages/client/src/**/*.ts',
    [...ours('host', 'node-daemon', 'space-api', 'cli'), 'dockerode', 'better-sqlite3'],
    'the client is a user tool: it speaks only the wire protocol',
  ),
  boundary(
    'packages/cli/src/**/*.ts',
    [...ours('host', 'node-daemon', 'space-api'), 'dockerode', '@unraid/libvirt', 'better-sqlite3', 'koa'],
    'the CLI is a user tool: it speaks the wire protocol through @ocs/client',
  ),
  boundary(
    'packages/host/src/**/*.ts',
    [...ours('node-daemon', 'space-api', 'client', 'cli'), 'koa'],
    'drivers do not know their callers',
  ),
);
