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
        { devDependencies: ['**/*.test.ts', '**/test/**', '**/conformance.ts'] },
      ],
    },
  },
  // Tests, the CLI, benchmarks and e2e print on purpose.
  {
    files: ['**/*.test.ts', '**/test/**/*.ts', 'e2e/**/*.ts', 'bench/**/*.ts', 'packages/client/src/cli/**/*.ts'],
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
  // protocol: wire contracts only, usable in a browser. No I/O of any kind.
  {
    files: ['packages/protocol/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [...nodeBuiltins, 'dockerode', 'better-sqlite3', '@ocs/*', 'koa', 'pino'],
              message: 'protocol has no I/O and depends on no other package of ours',
            },
          ],
        },
      ],
    },
  },
  // space-api: unprivileged. It never talks to Docker, libvirt or the host drivers directly: it asks the broker.
  {
    files: ['packages/space-api/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '@ocs/host',
                '@ocs/host/*',
                'dockerode',
                '@unraid/libvirt',
                '@ocs/node-daemon',
                '@ocs/node-daemon/*',
              ],
              message: 'the space API asks the daemon broker for host actions',
            },
          ],
        },
      ],
    },
  },
  // http: the pipeline both servers share. Protocol and Koa only: no host, no process of ours, no state.
  {
    files: ['packages/http/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '@ocs/host',
                '@ocs/host/*',
                '@ocs/node-daemon',
                '@ocs/node-daemon/*',
                '@ocs/space-api',
                '@ocs/space-api/*',
                '@ocs/client',
                'dockerode',
                '@unraid/libvirt',
                'better-sqlite3',
              ],
              message:
                'the HTTP pipeline is shared by both servers: it knows the protocol and Koa, nothing of a process',
            },
          ],
        },
      ],
    },
  },
  // client: a user tool; never imports server or host code.
  {
    files: ['packages/client/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@ocs/host', '@ocs/host/*', '@ocs/node-daemon', '@ocs/space-api', 'dockerode', 'better-sqlite3'],
              message: 'the client speaks only the wire protocol',
            },
          ],
        },
      ],
    },
  },
  // host: drivers do not depend on the processes that use them.
  {
    files: ['packages/host/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@ocs/node-daemon', '@ocs/space-api', '@ocs/client', 'koa'],
              message: 'drivers do not know their callers',
            },
          ],
        },
      ],
    },
  },
);
