/** `ocs key`: the owner's Ed25519 key, made and kept on this machine only. */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { generatePrivateKey } from '@ocs/protocol';
import { UsageError } from '../units.js';
import { keyValues, print } from '../output.js';
import type { Run } from '../main.js';

export function keyCommands(program: Command, run: Run): void {
  const key = program.command('key').description('your owner key (Ed25519, OpenSSH format)');
  key
    .command('new')
    .description('make a key: the private half stays in the file (0600), the public half in FILE.pub')
    .option('--file <path>', 'where to write it (default: the key ocs uses, ~/.ssh/id_ed25519 or --key)')
    .option('--comment <text>', 'comment in the public key', 'ocs')
    .action(
      run(async (ctx, o: { file?: string; comment: string }) => {
        const path = o.file ?? ctx.keyPath();
        if (existsSync(path))
          throw new UsageError(`${path} exists: ocs never overwrites a key (pass --file elsewhere)`);
        mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
        const k = generatePrivateKey();
        try {
          writeFileSync(path, k.toOpenSshPrivate(o.comment), { mode: 0o600, flag: 'wx' });
          writeFileSync(`${path}.pub`, `${k.publicKey.toOpenSsh(o.comment)}\n`, { mode: 0o644, flag: 'wx' });
          const shown = {
            file: path,
            publicKey: k.publicKey.toOpenSsh(o.comment),
            fingerprint: k.publicKey.fingerprint(),
          };
          print(ctx.out, shown, () =>
            keyValues([
              ['key', path],
              ['public', shown.publicKey],
              ['fingerprint', shown.fingerprint],
            ]),
          );
        } finally {
          k.destroy();
        }
      }),
    );
  key
    .command('show')
    .description('the public half and fingerprint of the key ocs signs with')
    .action(
      run(async (ctx) => {
        const k = ctx.ownerKey();
        try {
          const shown = {
            file: ctx.keyPath(),
            publicKey: k.publicKey.toOpenSsh(),
            fingerprint: k.publicKey.fingerprint(),
          };
          print(ctx.out, shown, () =>
            keyValues([
              ['key', shown.file],
              ['public', shown.publicKey],
              ['fingerprint', shown.fingerprint],
            ]),
          );
        } finally {
          k.destroy();
        }
      }),
    );
}
