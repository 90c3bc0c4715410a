#!/usr/bin/env node
// Bundles the space API process into one file. A space process starts on demand inside its
// space's CPU allowance; one pre-linked file halves its start-up CPU (see bench/density).
import { build } from 'esbuild';

await build({
  entryPoints: [new URL('../packages/space-api/dist/main.js', import.meta.url).pathname],
  outfile: new URL('../packages/space-api/dist/bundle.mjs', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  minify: true,
  sourcemap: true,
  // Native addons stay outside the bundle and load from node_modules.
  external: ['better-sqlite3'],
  banner: {
    js: "import { createRequire as __ocsRequire } from 'node:module'; const require = __ocsRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
