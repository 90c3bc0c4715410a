/** From the global options and the environment to a client for the chosen node, key and token. */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { OcsClient } from '@ocs/client';
import { OcsError, parsePrivateKey, type Ed25519PrivateKey } from '@ocs/protocol';
import { Store, configDir, type NodeEntry } from './config.js';
import { UsageError } from './units.js';
import type { Out } from './output.js';

export interface GlobalOptions {
  node?: string;
  key?: string;
  tokenFile?: string;
  configDir?: string;
  json?: boolean;
}

export class Context {
  readonly store: Store;
  readonly out: Out;
  private clients = new Map<string, OcsClient>();

  constructor(readonly g: GlobalOptions) {
    this.store = new Store(configDir(g.configDir));
    this.out = { json: g.json === true };
  }

  /** The owner key: `--key`, `$OCS_KEY`, else `~/.ssh/id_ed25519`. Read only here, never copied. */
  keyPath(): string {
    return this.g.key ?? process.env.OCS_KEY ?? join(homedir(), '.ssh', 'id_ed25519');
  }

  ownerKey(): Ed25519PrivateKey {
    const path = this.keyPath();
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      throw new UsageError(`no key at ${path}: make one with ocs key new, or pass --key`);
    }
    try {
      return parsePrivateKey(text);
    } catch (err) {
      if (err instanceof OcsError && err.code === 'key_encrypted')
        throw new UsageError(
          `${path} is protected by a passphrase, which ocs cannot read: use a key made by ocs key new`,
        );
      throw err;
    }
  }

  /** `fileFor` (a token file for one node), `--token-file`, `$OCS_TOKEN_FILE` (read at every request: another process may refresh it), `$OCS_TOKEN`. */
  token(fileFor?: string): () => string {
    const file = fileFor ?? this.g.tokenFile ?? process.env.OCS_TOKEN_FILE;
    if (file)
      return () => {
        try {
          return readFileSync(file, 'utf8').trim();
        } catch {
          throw new UsageError(`cannot read the token file ${file}`);
        }
      };
    const t = process.env.OCS_TOKEN;
    if (!t) throw new UsageError('no token: set OCS_TOKEN or OCS_TOKEN_FILE (on a development node: ocs token)');
    return () => t;
  }

  node(name?: string): NodeEntry {
    return this.store.node(name ?? this.g.node);
  }

  /** A client for the node, signing with the owner key when `owner` is set. */
  client(o: { owner?: boolean; node?: string; tokenFile?: string } = {}): OcsClient {
    const n = this.node(o.node);
    const k = `${n.name}\n${o.owner ? 'owner' : ''}\n${o.tokenFile ?? ''}`;
    let c = this.clients.get(k);
    if (!c) {
      c = new OcsClient({
        url: n.url,
        ca: n.cert,
        fingerprint: n.fingerprint,
        token: this.token(o.tokenFile),
        ...(o.owner ? { ownerKey: this.ownerKey() } : {}),
      });
      this.clients.set(k, c);
    }
    return c;
  }

  /** The space in-space commands act on: `--space`, `$OCS_SPACE`, else the current one. */
  space(flag?: string): { node: string; spaceId: string } {
    const id = flag ?? process.env.OCS_SPACE;
    if (id) return { node: this.node().name, spaceId: id };
    const cur = this.store.current();
    if (!cur) throw new UsageError('which space? pass --space ID, or choose one with ocs space use ID');
    return cur;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}
