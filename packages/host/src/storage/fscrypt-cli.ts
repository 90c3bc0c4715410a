/**
 * The few Debian `fscrypt` (0.3.x) invocations the driver needs, with its quirks handled in one
 * place: `--quiet` everywhere (without it a wrong key makes `unlock` prompt again forever), raw
 * keys through an inherited tmpfs descriptor (the tool stats the key file, so a pipe is refused),
 * and its status output parsed into descriptors.
 */
import { existsSync, linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { OcsError } from '@ocs/protocol';
import { CommandError, type Runner } from '../exec.js';
import { CHILD_KEY_PATH, withKeyFd } from './keyfd.js';
import { shredFile } from './loop.js';

/** fscrypt reads its global config from here and nowhere else. */
export const FSCRYPT_CONF = '/etc/fscrypt.conf';
const KEY_FLAG = `--key=${CHILD_KEY_PATH}`;
// Rotation: the tool reads `--key` twice in one call (new protector, then the policy through the
// old one), so the two raw keys meet through a temporary passphrase protector instead.
const BRIDGE_PASSPHRASE_BYTES = 32;
// fscrypt's own defaults (README "Configuration file"), except the hashing costs (see ensureGlobalConfig).
const GLOBAL_CONFIG = `${JSON.stringify(
  {
    source: 'custom_passphrase',
    hash_costs: { time: '3', memory: '65536', parallelism: '4' },
    options: { padding: '32', contents: 'AES_256_XTS', filenames: 'AES_256_CTS', policy_version: '2' },
    use_fs_keyring_for_v1_policies: false,
    allow_cross_user_metadata: false,
  },
  null,
  '\t',
)}\n`;

/** Status of one encrypted directory as `fscrypt status DIR` reports it. */
export interface DirStatus {
  policy: string;
  policyVersion: number;
  unlocked: boolean;
  /** Descriptors of the protectors that protect this directory's policy. */
  protectors: string[];
}

/** Parses `fscrypt status DIR` (exported for tests). */
export function parseDirStatus(text: string): DirStatus {
  const policy = /^Policy:\s+([0-9a-f]{16,32})$/m.exec(text)?.[1];
  const unlocked = /^Unlocked:\s+(\S+)/m.exec(text)?.[1];
  const version = /policy_version:(\d)/.exec(text)?.[1];
  if (!policy || !unlocked) throw new Error('unexpected output from fscrypt status');
  const protectors: string[] = [];
  const table = text.split(/^PROTECTOR\s+LINKED\s+DESCRIPTION$/m)[1] ?? '';
  for (const line of table.split('\n')) {
    const m = /^([0-9a-f]{16})\s/.exec(line);
    if (m?.[1]) protectors.push(m[1]);
  }
  return { policy, policyVersion: version ? Number(version) : 1, unlocked: unlocked !== 'No', protectors };
}

/** Descriptor of the protector named `name` in `fscrypt status MOUNTPOINT` (exported for tests). */
export function findProtectorByName(text: string, name: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{16})\s+\S+\s+(?:raw key|custom) protector "(.*)"$/.exec(line);
    if (m?.[1] && m[2] === name) return m[1];
  }
  return undefined;
}

function isWrongKey(e: unknown): boolean {
  return e instanceof CommandError && /incorrect key provided|incorrect passphrase|wrong key/i.test(e.stderr);
}

/** The wrapper a driver uses; `run` is injected so tests can watch every argv. */
export class FscryptCli {
  constructor(
    private readonly run: Runner,
    private readonly keyTmpfs: string,
  ) {}

  /**
   * Creates /etc/fscrypt.conf if missing. `fscrypt setup` would also create /.fscrypt on the root
   * filesystem (only login protectors use it) and calibrate passphrase hashing to one second with
   * up to half the RAM; instead the documented JSON is written directly, with v2 policies and the
   * RFC 9106 second recommended Argon2id costs (t=3, 64 MiB, p=4): bounded memory inside the
   * daemon's cgroup for the rotation bridge, and sane defaults for anyone else on the host.
   */
  async ensureGlobalConfig(): Promise<void> {
    if (!existsSync(FSCRYPT_CONF)) {
      // Written aside and linked into place: never a half-written config, never one replaced.
      const tmp = `${FSCRYPT_CONF}.ocs-${randomBytes(6).toString('hex')}`;
      writeFileSync(tmp, GLOBAL_CONFIG, { mode: 0o644, flag: 'wx' });
      try {
        linkSync(tmp, FSCRYPT_CONF);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      } finally {
        unlinkSync(tmp);
      }
    }
    const conf = JSON.parse(readFileSync(FSCRYPT_CONF, 'utf8')) as { options?: { policy_version?: string | number } };
    if (String(conf.options?.policy_version ?? '2') !== '2') {
      throw new Error(
        `${FSCRYPT_CONF} selects v1 encryption policies; the fscrypt storage driver needs policy_version 2`,
      );
    }
  }

  /** Creates the filesystem's .fscrypt metadata directory (root-only writable). */
  async setupFilesystem(mountpoint: string): Promise<void> {
    await this.run('fscrypt', ['setup', mountpoint, '--quiet']);
  }

  /** Encrypts the empty directory `dir` with a new v2 policy protected by a new raw_key protector named `name`, and leaves it unlocked. */
  async encrypt(dir: string, name: string, key: Uint8Array): Promise<DirStatus> {
    await this.withKey(key, [
      'encrypt',
      dir,
      '--quiet',
      '--source=raw_key',
      `--name=${name}`,
      KEY_FLAG,
      '--no-recovery',
    ]);
    const st = await this.status(dir);
    if (st.policyVersion !== 2)
      throw new Error(`fscrypt applied a v${st.policyVersion} policy to ${dir}; v2 is required`);
    return st;
  }

  async status(dir: string): Promise<DirStatus> {
    return parseDirStatus((await this.run('fscrypt', ['status', dir])).stdout);
  }

  /** Adds the policy key of `dir` to the filesystem keyring; a key that opens no protector → unwrap_failed. */
  async unlock(dir: string, key: Uint8Array): Promise<void> {
    try {
      await this.withKey(key, ['unlock', dir, '--quiet', KEY_FLAG]);
    } catch (e) {
      if (isWrongKey(e)) throw new OcsError('unwrap_failed', 'the key does not open this storage');
      throw e;
    }
  }

  /** Removes the key of `dir` from the filesystem keyring, whoever added it. Fails if files are still open. */
  async lock(dir: string): Promise<void> {
    await this.run('fscrypt', ['lock', dir, '--quiet', '--all-users']);
  }

  /**
   * Re-protects the policy of `dir` with a new raw_key protector holding `newKey`, proven by
   * `oldKey`, then removes and shreds every other protector of that policy. Data is not rewritten.
   */
  async rotate(mountpoint: string, dir: string, name: string, oldKey: Uint8Array, newKey: Uint8Array): Promise<void> {
    const before = await this.status(dir);
    const pass = Buffer.from(`${randomBytes(BRIDGE_PASSPHRASE_BYTES).toString('hex')}\n`);
    const suffix = randomBytes(4).toString('hex');
    const bridgeName = `ocs-rotate-${suffix}`;
    const policy = `--policy=${mountpoint}:${before.policy}`;
    let bridge: string | undefined;
    try {
      await this.run(
        'fscrypt',
        [
          'metadata',
          'create',
          'protector',
          mountpoint,
          '--quiet',
          '--source=custom_passphrase',
          `--name=${bridgeName}`,
        ],
        {
          stdin: pass,
        },
      );
      bridge = await this.protectorByName(mountpoint, bridgeName);
      let opened = false;
      for (const old of before.protectors) {
        try {
          await this.addProtectorToPolicy(oldKey, mountpoint, bridge, policy, old, pass);
          opened = true;
          break;
        } catch (e) {
          if (!isWrongKey(e)) throw e;
        }
      }
      if (!opened) throw new OcsError('unwrap_failed', 'the old key does not open this storage');

      const newName = `${name}-${suffix}`;
      await this.withKey(newKey, [
        'metadata',
        'create',
        'protector',
        mountpoint,
        '--quiet',
        '--source=raw_key',
        `--name=${newName}`,
        KEY_FLAG,
      ]);
      const fresh = await this.protectorByName(mountpoint, newName);
      await this.addProtectorToPolicy(newKey, mountpoint, fresh, policy, bridge, pass);
      // Everything but the new protector goes, including leftovers of an interrupted earlier rotation.
      for (const p of (await this.status(dir)).protectors) {
        if (p === fresh) continue;
        await this.removeProtectorFromPolicy(mountpoint, p, policy);
        shredFile(protectorPath(mountpoint, p));
      }
    } finally {
      pass.fill(0);
      // Normally gone already; after a failure it must not stay on the policy or on disk.
      if (bridge && existsSync(protectorPath(mountpoint, bridge))) {
        await this.removeProtectorFromPolicy(mountpoint, bridge, policy).catch(
          () => undefined, // it was never added
        );
        shredFile(protectorPath(mountpoint, bridge));
      }
    }
  }

  /** Shreds the policy of `dir` and all its protectors (the directory stays, unreadable for good). */
  async shredPolicy(mountpoint: string, dir: string): Promise<void> {
    const st = await this.status(dir);
    for (const p of st.protectors) shredFile(protectorPath(mountpoint, p));
    shredFile(join(mountpoint, '.fscrypt', 'policies', st.policy));
  }

  /** fscrypt `args` with `key` on an inherited descriptor (`KEY_FLAG` names it), `stdin` if given. */
  private withKey(key: Uint8Array, args: string[], stdin?: Uint8Array): Promise<unknown> {
    return withKeyFd(
      key,
      (fd) => this.run('fscrypt', args, stdin ? { stdin, fds: [fd] } : { fds: [fd] }),
      this.keyTmpfs,
    );
  }

  /**
   * Adds `protector` to the policy (`policy`, its `--policy=` flag) through the protector
   * `unlockWith`, which `key` opens; `pass` is the rotation bridge's passphrase, whichever of
   * the two it is.
   */
  private addProtectorToPolicy(
    key: Uint8Array,
    mountpoint: string,
    protector: string,
    policy: string,
    unlockWith: string,
    pass: Uint8Array,
  ): Promise<unknown> {
    return this.withKey(
      key,
      [
        'metadata',
        'add-protector-to-policy',
        '--quiet',
        `--protector=${mountpoint}:${protector}`,
        policy,
        `--unlock-with=${mountpoint}:${unlockWith}`,
        KEY_FLAG,
      ],
      pass,
    );
  }

  /** Takes `protector` off the policy (`policy`, its `--policy=` flag). */
  private async removeProtectorFromPolicy(mountpoint: string, protector: string, policy: string): Promise<void> {
    await this.run('fscrypt', [
      'metadata',
      'remove-protector-from-policy',
      '--quiet',
      '--force',
      `--protector=${mountpoint}:${protector}`,
      policy,
    ]);
  }

  private async protectorByName(mountpoint: string, name: string): Promise<string> {
    const id = findProtectorByName((await this.run('fscrypt', ['status', mountpoint])).stdout, name);
    if (!id) throw new Error(`fscrypt did not list the protector it just created on ${mountpoint}`);
    return id;
  }
}

/** Where fscrypt keeps a protector's wrapped key on its filesystem (layout documented in its README). */
export function protectorPath(mountpoint: string, descriptor: string): string {
  if (!/^[0-9a-f]{16}$/.test(descriptor)) throw new Error('unexpected protector descriptor');
  return join(mountpoint, '.fscrypt', 'protectors', descriptor);
}
