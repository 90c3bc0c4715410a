#!/usr/bin/env node
// Writes a small image tarball (`docker save` format: busybox from Debian's busybox-static, no
// registry needed) to the path given, for trying `ocs image load` on a fresh node:
//   node scripts/example-image.mjs /tmp/busybox.tar
import { copyFileSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { buildBusyboxImage } from '../packages/host/dist/testing/index.js';

const out = resolve(process.argv[2] ?? 'busybox.tar');
const built = await buildBusyboxImage(`ocs-example/busybox-${process.pid}:latest`);
copyFileSync(built, out);
rmSync(dirname(built), { recursive: true, force: true });
console.log(out);
