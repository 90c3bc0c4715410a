/**
 * The user's own state, in their config directory (`$OCS_CONFIG_DIR`, else
 * `$XDG_CONFIG_HOME/ocs`, else `~/.config/ocs`), every file 0600 and every directory 0700:
 *
 * - `nodes.json`: the nodes added (`ocs node add`), each with the certificate pinned on first
 *   contact, and which one is the default;
 * - `spaces/<node>/<space>.json`: the wrapped key of each space reserved from here (the space's
 *   key encrypted to the owner's key: only that private key opens it);
 * - `current.json`: the space that in-space commands act on when `--space` is not given.
 */
import { chmodSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { isSpaceId } from '@ocs/protocol';
import { UsageError } from './units.js';

export interface NodeEntry {
  name: string;
  url: string;
  /** SHA-256 of the certificate, as the node prints it. */
  fingerprint: string;
  /** The certificate itself (PEM), trusted on first use. */
  cert: string;
  addedAt: string;
}

export interface SpaceEntry {
  spaceId: string;
  node: string;
  wrappedKey: string;
  reservedAt: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function configDir(flag?: string): string {
  if (flag) return flag;
  if (process.env.OCS_CONFIG_DIR) return process.env.OCS_CONFIG_DIR;
  const xdg = process.env.XDG_CONFIG_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.config'), 'ocs');
}

export class Store {
  constructor(readonly dir: string) {}

  nodes(): { default?: string; nodes: NodeEntry[] } {
    return this.read('nodes.json') ?? { nodes: [] };
  }

  node(name?: string): NodeEntry {
    const { default: dflt, nodes } = this.nodes();
    const wanted = name ?? process.env.OCS_NODE ?? dflt ?? (nodes.length === 1 ? nodes[0]!.name : undefined);
    if (!wanted)
      throw new UsageError(
        nodes.length === 0 ? 'no node added yet: ocs node add NAME URL' : 'which node? pass --node NAME',
      );
    const n = nodes.find((x) => x.name === wanted);
    if (!n) throw new UsageError(`no node named ${wanted}: see ocs node ls`);
    return n;
  }

  addNode(entry: NodeEntry, makeDefault: boolean): void {
    if (!NAME_RE.test(entry.name)) throw new UsageError(`${JSON.stringify(entry.name)} is not a valid node name`);
    const s = this.nodes();
    if (s.nodes.some((n) => n.name === entry.name))
      throw new UsageError(`a node named ${entry.name} exists: ocs node rm ${entry.name} first`);
    s.nodes.push(entry);
    if (makeDefault || !s.default) s.default = entry.name;
    this.write('nodes.json', s);
  }

  removeNode(name: string): boolean {
    const s = this.nodes();
    const before = s.nodes.length;
    s.nodes = s.nodes.filter((n) => n.name !== name);
    if (s.default === name) delete s.default;
    this.write('nodes.json', s);
    return s.nodes.length < before;
  }

  setDefaultNode(name: string): void {
    const s = this.nodes();
    if (!s.nodes.some((n) => n.name === name)) throw new UsageError(`no node named ${name}: see ocs node ls`);
    s.default = name;
    this.write('nodes.json', s);
  }

  space(node: string, spaceId: string): SpaceEntry | undefined {
    if (!isSpaceId(spaceId)) throw new UsageError(`${JSON.stringify(spaceId)} is not a space id (sp_…)`);
    return this.read(join('spaces', node, `${spaceId}.json`));
  }

  spaces(node: string): SpaceEntry[] {
    let names: string[] = [];
    try {
      names = readdirSync(join(this.dir, 'spaces', node));
    } catch {
      return [];
    }
    return names
      .filter((n) => isSpaceId(n.replace(/\.json$/, '')))
      .map((n) => this.read<SpaceEntry>(join('spaces', node, n))!)
      .filter(Boolean);
  }

  putSpace(e: SpaceEntry): void {
    this.write(join('spaces', e.node, `${e.spaceId}.json`), e);
  }

  forgetSpace(node: string, spaceId: string): void {
    rmSync(join(this.dir, 'spaces', node, `${spaceId}.json`), { force: true });
    const cur = this.current();
    if (cur?.node === node && cur.spaceId === spaceId) rmSync(join(this.dir, 'current.json'), { force: true });
  }

  current(): { node: string; spaceId: string } | undefined {
    return this.read('current.json');
  }

  use(node: string, spaceId: string): void {
    this.write('current.json', { node, spaceId });
  }

  private read<T>(rel: string): T | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dir, rel), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new UsageError(`${join(this.dir, rel)} is not readable JSON: ${(err as Error).message}`);
    }
  }

  /** Written whole to a temporary file, then renamed: a crash never leaves half a file. */
  private write(rel: string, value: unknown): void {
    const path = join(this.dir, rel);
    const parent = join(path, '..');
    mkdirSync(parent, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, path);
  }
}
