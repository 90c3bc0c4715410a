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
  // protocol/node: the Node-only entry (@ocs/protocol/node). node:crypto, and the protocol itself.
  {
    files: ['packages/protocol/node/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                ...nodeBuiltins,
                '!node:crypto',
                'dockerode',
                'better-sqlite3',
                '@ocs/*',
                '!@ocs/protocol',
                'koa',
                'pino',
              ],
              message: 'the Node entry of the protocol adds native crypto, no other I/O',
            },
          ],
        },
      ],
    },
  },
  // node-daemon: runs the space process as a program (its bundle), never links it, the SDK or the CLI.
  {
    files: ['packages/node-daemon/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@ocs/space-api', '@ocs/space-api/*', '@ocs/client', '@ocs/client/*', '@ocs/cli', '@ocs/cli/*'],
              message: 'the daemon talks to space processes over sockets and links no client code',
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
  // client: a user tool; never imports server or host code.
  {
    files: ['packages/client/src/**/*.ts'],
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
                '@ocs/cli',
                'dockerode',
                'better-sqlite3',
              ],
              message: 'the client speaks only the wire protocol',
            },
          ],
        },
      ],
    },
  },
  // cli: a user tool on the SDK; never imports server or host code.
  {
    files: ['packages/cli/src/**/*.ts'],
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
                'dockerode',
                '@unraid/libvirt',
                'better-sqlite3',
                'koa',
              ],
              message: 'the CLI speaks the wire protocol through @ocs/client',
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
              group: [
                '@ocs/node-daemon',
                '@ocs/node-daemon/*',
                '@ocs/space-api',
                '@ocs/space-api/*',
                '@ocs/client',
                '@ocs/cli',
                'koa',
              ],
              message: 'drivers do not know their callers',
            },
          ],
        },
      ],
    },
  },
);
