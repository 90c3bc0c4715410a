/**
 * The daemon's configuration: a JSON Schema with embedded defaults. With no file at all the
 * daemon runs as a development node; a bad file fails the boot with a message naming the field.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Type, type Static } from '@sinclair/typebox';
import { DEFAULT_DENIED, checkCidr } from '@ocs/host';
import { HOST_ID_FILES } from './spaces/id-ranges.js';
import {
  Cidr,
  JsonWebKeySet,
  MAX_TOKEN_LIFETIME_SECONDS,
  Obj,
  OcsError,
  RemoteKeysPolicy,
  validate,
  GiB,
} from '@ocs/protocol';

const ResourcesConfig = Obj({
  cpuMillicores: Type.Integer({ minimum: 0 }),
  memoryBytes: Type.Integer({ minimum: 0 }),
  storageBytes: Type.Integer({ minimum: 0 }),
});

/** One trusted issuer: exactly one of `jwks` and `jwksUri` (checked in resolveConfig). */
const IssuerConfig = Obj({
  issuer: Type.String({ minLength: 1 }),
  /** Inline JWKS (public keys only: anything else is dropped). */
  jwks: Type.Optional(JsonWebKeySet),
  /** Fetched by the daemon (cached, fetched again on an unknown kid) and handed to the space processes. */
  jwksUri: Type.Optional(Type.String({ pattern: '^https://' })),
  /** PEM file of the CA(s) the `jwksUri` server's certificate must chain to, instead of the system's roots. */
  caFile: Type.Optional(Type.String({ minLength: 1 })),
  /** The `typ` header this issuer's tokens carry; default `at+jwt` (RFC 9068). */
  tokenType: Type.Optional(Type.String({ minLength: 1, maxLength: 80 })),
});

export const ConfigSchema = Obj({
  nodeId: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9.-]{0,62}$' })),
  cluster: Type.Optional(Type.String({ minLength: 1 })),
  stateDir: Type.String(),
  runDir: Type.String(),
  listen: Obj({
    host: Type.String(),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
    /**
     * The names clients reach this node by (`host` or `host:port`); a request naming another
     * authority is refused (`misdirected_request`), so a request signed for one node never runs
     * on another. Default: loopback, the hostname and every local interface address.
     */
    publicNames: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 255 }), { maxItems: 64 })),
  }),
  tls: Obj({ certFile: Type.Optional(Type.String()), keyFile: Type.Optional(Type.String()) }),
  auth: Obj({
    issuers: Type.Array(IssuerConfig),
    /** A local issuer whose private key is written 0600 to the state dir, so `ocs` can mint tokens for the farmer. */
    devIssuer: Type.Boolean(),
    /** At most 15 minutes: the product promises that a token dies that soon by itself. */
    maxTokenLifetimeSeconds: Type.Integer({ minimum: 30, maximum: MAX_TOKEN_LIFETIME_SECONDS }),
    clockToleranceSeconds: Type.Integer({ minimum: 0, maximum: 300 }),
    /** How the keys of `jwksUri` issuers are kept fresh. */
    remoteKeys: RemoteKeysPolicy,
  }),
  capacity: Obj({
    farmerReserve: ResourcesConfig,
    /** Storage offered to spaces; 0 means "detect from the free space under storage.root". */
    storageBytes: Type.Integer({ minimum: 0 }),
  }),
  storage: Obj({
    backend: Type.Union([Type.Literal('fscrypt'), Type.Literal('zfs')]),
    root: Type.String(),
    pool: Type.Optional(Type.String()),
  }),
  cgroups: Obj({
    root: Type.String(),
    parent: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9_-]*([.][A-Za-z0-9_-]+)+$',
      description: 'One cgroup name with a dot suffix (libvirt keeps only such names verbatim), e.g. ocs.slice.',
    }),
    /**
     * The daemon's own limits. On cgroup v2 inside a delegated group (the systemd unit) the
     * daemon moves itself into the leaf `daemon` beside `parent` and caps it there; the unit's
     * own limits bound the whole tree, spaces included.
     */
    daemon: Obj({ memoryBytes: Type.Integer({ minimum: 64 * 1024 * 1024 }), pids: Type.Integer({ minimum: 64 }) }),
  }),
  spaces: Obj({
    uidBase: Type.Integer({ minimum: 1000 }),
    uidCount: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    /** A space process idle this long exits; the next request starts it again. */
    idleSeconds: Type.Integer({ minimum: 1 }),
    /**
     * How long a space process may take from spawn to listening before the start counts as
     * failed. Generous: a start is a node runtime loading its bundle within the space's CPU
     * allowance, and on a busy or emulated host that takes seconds; a hung process is killed.
     */
    readySeconds: Type.Integer({ minimum: 1, maximum: 600 }),
    /** CPU allowance of each space's API process, on top of the space's reservation (control plane). */
    apiCpuMillicores: Type.Integer({ minimum: 100, maximum: 4000 }),
    graceSeconds: Type.Integer({ minimum: 0 }),
    maxLeaseSeconds: Type.Integer({ minimum: 60 }),
    /**
     * The host's accounts and delegations, which the node's uid ranges must not overlap (the
     * daemon refuses to start naming the entry: spaces/id-ranges.ts).
     */
    idFiles: Obj({ passwd: Type.String(), group: Type.String(), subuid: Type.String(), subgid: Type.String() }),
    /** Record the node's ranges as root's delegations in `subuid`/`subgid`, so `useradd` never hands them out. */
    reserveIds: Type.Boolean(),
    /**
     * Tenants' command lines (containers' argv, QEMU's `-append`) must not be readable by local
     * accounts: `/proc` with `hidepid=invisible`. `mount`: the daemon remounts `/proc` so at start
     * when it is not (`gid=` the daemon's group); `require`: it refuses to start instead (the
     * operator mounts it, e.g. in `/etc/fstab`).
     */
    hideProcesses: Type.Union([Type.Literal('mount'), Type.Literal('require')]),
  }),
  /** Workload backends. `auto`: used when the daemon's socket answers at start, else off. */
  workloads: Obj({
    /**
     * Containers: a podman engine per space, its store in the space's encrypted storage.
     * `auto`: on when podman is installed. Each space gets 65,536 subordinate ids from
     * `subidBase` and a /26 of `subnetPool`, by its uid's slot.
     */
    containers: Obj({
      enabled: Type.Union([Type.Literal('auto'), Type.Boolean()]),
      idleSeconds: Type.Integer({ minimum: 1 }),
      subidBase: Type.Integer({ minimum: 65_536, maximum: 2 ** 32 - 1 }),
      subnetPool: Type.String({ pattern: '^10\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}$' }),
      /** How long lock and expiry let containers and VMs shut down before they are killed. */
      stopGraceSeconds: Type.Integer({ minimum: 0, maximum: 60 }),
      /** Where the engines' run directories go (tmpfs, at most 24 characters); default `<runDir>/e`. */
      runRoot: Type.Optional(Type.String({ pattern: '^/[A-Za-z0-9_./-]{1,23}$' })),
    }),
    libvirt: Obj({
      enabled: Type.Union([Type.Literal('auto'), Type.Boolean()]),
      uri: Type.String(),
      /** `auto`: the guest kernel must boot under KVM (probed once, remembered in stateDir); `tcg`/`kvm` force. */
      accelerator: Type.Union([Type.Literal('auto'), Type.Literal('tcg'), Type.Literal('kvm')]),
      /** The kernel the KVM probe boots; default the newest /boot/vmlinuz-*. */
      probeKernel: Type.Optional(Type.String({ minLength: 1 })),
    }),
    /**
     * The spaces' networks: the node's rules, the same for every space (see docs/operations.md).
     * Addresses are the protocol's `Cidr`; resolveConfig checks their octets and prefixes.
     */
    network: Obj({
      /**
       * What no space reaches, whatever egress it has: by default every network that is not the
       * internet (the node's own, loopback, link-local with the cloud's metadata address).
       */
      denied: Type.Array(Cidr, { maxItems: 256 }),
      /** Resolvers a space with egress may ask, even inside `denied`; they go in its containers' resolv.conf. */
      dns: Type.Array(Cidr, { maxItems: 8 }),
      /** Each space's outgoing traffic is dropped above this rate; absent: no cap. */
      egressBytesPerSecond: Type.Optional(Type.Integer({ minimum: 1024 })),
      /**
       * How many connections each space may have tracked at once: those its workloads open, and
       * those opened to its published ports. The node's conntrack table is shared by everything on
       * it (nf_conntrack_max: 262,144 on a node with more than 4 GiB of memory, 65,536 above 1 GiB,
       * with current kernels); a new connection that finds the table full is dropped, whoever's it
       * is, the daemon's own clients too. The defaults keep one space to 1/32 of the larger table
       * (1/8 of the smaller), and still leave a busy web service a few thousand clients at once.
       */
      maxConnections: Obj({
        outbound: Type.Integer({ minimum: 1, maximum: 16_777_216 }),
        inbound: Type.Integer({ minimum: 1, maximum: 16_777_216 }),
      }),
      /** How often the daemon checks that the spaces' rules are still in the kernel (and restores them). */
      watchSeconds: Type.Integer({ minimum: 1, maximum: 300 }),
      /**
       * The node's ports spaces publish on (every address of the node). A space reserves a number
       * of them with its resources (`ports`); the ledger counts them like CPU and memory.
       */
      ports: Obj({
        first: Type.Integer({ minimum: 1024, maximum: 65_535 }),
        last: Type.Integer({ minimum: 1024, maximum: 65_535 }),
      }),
      /**
       * Where spaces may reach out, at most: nowhere, anywhere not denied, or the listed
       * destinations. Each space asks within it; a space's default is nowhere.
       */
      egress: Type.Union([
        Type.Literal('none'),
        Type.Literal('all'),
        Obj({ allow: Type.Array(Cidr, { minItems: 1, maxItems: 256 }) }),
      ]),
    }),
  }),
  /** Spaces moving between nodes. */
  moves: Obj({
    /**
     * Identity keys (base64url, as `GET /v1/node` shows them) of the nodes whose drains this
     * node takes in: such a node may open an import here on the owner's delegation naming this
     * node, without a token of the space's org. Usually the farmer's own other nodes.
     */
    peers: Type.Array(Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }), { maxItems: 1024 }),
  }),
  /** Retiring the node (`ocs-node drain`). */
  drain: Obj({
    /**
     * Where a drain exports the spaces it cannot move (no delegation, or no node of it takes
     * them): one archive file per space, ciphertext, for its owner to restore anywhere. Named
     * here, not in the API: a farmer's token does not choose where root writes. Empty: under
     * the state directory, `exports/`.
     */
    exportDir: Type.String(),
  }),
  log: Obj({
    level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l))),
  }),
});
export type Config = Static<typeof ConfigSchema>;

export const DEFAULTS: Config = {
  stateDir: '/var/lib/ocs',
  runDir: '/run/ocs',
  listen: { host: '0.0.0.0', port: 8443 },
  tls: {},
  auth: {
    issuers: [],
    devIssuer: true,
    maxTokenLifetimeSeconds: 900,
    clockToleranceSeconds: 30,
    remoteKeys: { refreshSeconds: 300, cooldownSeconds: 30, maxStaleSeconds: 3600 },
  },
  capacity: { farmerReserve: { cpuMillicores: 500, memoryBytes: 1 * GiB, storageBytes: 2 * GiB }, storageBytes: 0 },
  storage: { backend: 'fscrypt', root: '/var/lib/ocs-storage' },
  cgroups: { root: '/sys/fs/cgroup', parent: 'ocs.slice', daemon: { memoryBytes: 1 * GiB, pids: 4096 } },
  spaces: {
    uidBase: 200_000,
    uidCount: 50_000,
    idFiles: { ...HOST_ID_FILES },
    reserveIds: true,
    hideProcesses: 'mount',
    idleSeconds: 300,
    readySeconds: 60,
    apiCpuMillicores: 1000,
    graceSeconds: 3600,
    maxLeaseSeconds: 30 * 86400,
  },
  workloads: {
    containers: {
      enabled: 'auto',
      idleSeconds: 60,
      subidBase: 1_000_000_000,
      subnetPool: '10.128.0.0/9',
      stopGraceSeconds: 3,
    },
    libvirt: { enabled: 'auto', uri: 'qemu:///system', accelerator: 'auto' },
    network: {
      denied: [...DEFAULT_DENIED],
      dns: [],
      maxConnections: { outbound: 4096, inbound: 4096 },
      watchSeconds: 5,
      ports: { first: 30_000, last: 30_999 },
      egress: 'none',
    },
  },
  moves: { peers: [] },
  drain: { exportDir: '' },
  log: { level: 'info' },
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge of a partial config over the defaults; arrays replace. */
export function mergeConfig(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = mergeConfig(base[k], v);
  return out;
}

/** Validates a partial config merged over the defaults; errors name the field. */
export function resolveConfig(partial: unknown): Config {
  let config: Config;
  try {
    config = validate(ConfigSchema, mergeConfig(DEFAULTS, partial ?? {}));
  } catch (err) {
    if (err instanceof OcsError) {
      const field = String(err.details?.field ?? '/');
      throw new Error(`configuration ${field}: ${err.message.replace(/^request body \S+ /, '')}`);
    }
    throw err;
  }
  config.auth.issuers.forEach((i, n) => {
    if ((i.jwks === undefined) === (i.jwksUri === undefined))
      throw new Error(`configuration /auth/issuers/${n}: needs exactly one of jwks and jwksUri`);
    if (i.caFile !== undefined && i.jwksUri === undefined)
      throw new Error(`configuration /auth/issuers/${n}/caFile: only applies to a jwksUri`);
  });
  checkWorkloadRanges(config);
  const net = config.workloads.network;
  if (net.ports.last < net.ports.first)
    throw new Error('configuration /workloads/network/ports: last must not be below first');
  // A tenant publishing the daemon's own port would DNAT every client of the node (tokens,
  // signed requests, the first pin of `ocs node add`) to its container.
  if (config.listen.port >= net.ports.first && config.listen.port <= net.ports.last)
    throw new Error(
      `configuration /workloads/network/ports: ${net.ports.first}-${net.ports.last} holds the daemon's own port (listen.port ${config.listen.port})`,
    );
  const allow = typeof net.egress === 'object' ? net.egress.allow : [];
  for (const [field, list] of [
    ['denied', net.denied] as const,
    ['dns', net.dns] as const,
    ['egress/allow', allow] as const,
  ])
    list.forEach((v, n) => {
      try {
        checkCidr(v);
      } catch {
        throw new Error(`configuration /workloads/network/${field}/${n}: not an IPv4 address or network`);
      }
    });
  return config;
}

/**
 * Every space's subordinate ids and subnet must fit: `uidCount` slots of 65,536 ids below 2^32,
 * above the space and QEMU uids, and `uidCount` /26 networks in the pool.
 */
function checkWorkloadRanges(config: Config): void {
  const { uidBase, uidCount } = config.spaces;
  const c = config.workloads.containers;
  if (c.subidBase < uidBase + 2 * uidCount)
    throw new Error('configuration /workloads/containers/subidBase: must lie above the space and QEMU uids');
  if (c.subidBase + uidCount * 65_536 > 2 ** 32)
    throw new Error(
      'configuration /workloads/containers/subidBase: uidCount ranges of 65536 ids do not fit below 2^32',
    );
  const [addr, bits] = c.subnetPool.split('/') as [string, string];
  const octets = addr.split('.').map(Number);
  const prefix = Number(bits);
  if (octets.some((o) => o > 255) || prefix > 26 || prefix < 8)
    throw new Error('configuration /workloads/containers/subnetPool: not an IPv4 network of /8 to /26');
  if (2 ** (32 - prefix) / 64 < uidCount)
    throw new Error('configuration /workloads/containers/subnetPool: too small for a /26 per space (uidCount)');
}

/**
 * A config file states whether the node runs a development issuer: that one choice decides
 * whether a key on this machine can mint tokens for it, so it is never left to a default that
 * suits a laptop. Without any file the node is a development node, as documented.
 */
export function loadConfigFile(path: string | undefined): Config {
  if (path === undefined) return resolveConfig({});
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`configuration ${path}: ${(err as Error).message}`);
  }
  const auth = isPlainObject(parsed) ? parsed.auth : undefined;
  if (!isPlainObject(auth) || auth.devIssuer === undefined) {
    throw new Error(
      `configuration /auth/devIssuer: must be set in a config file (${path}): ` +
        'false for production, true for a development node whose own key mints tokens',
    );
  }
  return resolveConfig(parsed);
}

function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

/** What an operator must hear at every start: logged and printed in the banner. */
export function configWarnings(config: Config): string[] {
  const warnings: string[] = [];
  if (config.auth.devIssuer && !isLoopbackHost(config.listen.host)) {
    warnings.push(
      `the development issuer is on and the node listens on ${config.listen.host}, not on loopback only: ` +
        'tokens signed by the key in its state directory are accepted from the network; ' +
        'set auth.devIssuer to false for production',
    );
  }
  return warnings;
}
