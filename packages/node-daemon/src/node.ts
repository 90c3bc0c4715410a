/**
 * The composition root: builds a node daemon from a config and drivers. Only main.ts reads the
 * environment; tests build nodes here with their own config, clock and drivers.
 */
import { createServer, type Server } from 'node:https';
import { availableParallelism, hostname } from 'node:os';
import { existsSync, mkdirSync, readFileSync, statfsSync, statSync, chmodSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  cipherImplementation,
  hideProcesses,
  hidesProcesses,
  readProcMount,
  overlappingShifts,
  remapOwnership,
  type CgroupDriver,
  type IdShift,
  type NetworkFirewall,
  type StorageDriver,
  type VmDriver,
} from '@ocs/host';
import {
  authoritySet,
  parserRefusalResponse,
  cacheTokens,
  createTokenVerifier,
  type NodeInfo,
  type Resources,
} from '@ocs/protocol';
import { configWarnings, type Config } from './config.js';
import type { Logger } from './logger.js';
import { systemClock, type Clock } from './clock.js';
import { loadOrCreateDevIssuer, loadOrCreateIdentity, type DevIssuer, type NodeIdentity } from './identity.js';
import { loadOrCreateTls, type TlsMaterial } from './tls.js';
import {
  openDatabase,
  openNonceStore,
  isStanding,
  SpacesRepo,
  Ledger,
  AuditLog,
  WorkloadsRepo,
  PortsRepo,
  DrainsRepo,
  type Placement,
  type SpaceRow,
} from './state/index.js';
import { nodeHashes } from './crypto.js';
import { RefusalLog } from './state/refusals.js';
import { SpaceService, resourcesOf } from './spaces/service.js';
import { spaceDataLayout, spaceWorkloadIds } from './spaces/layout.js';
import { Broker } from './broker/broker.js';
import { WorkloadContext, WorkloadLifecycle, nodeWorkloads, type ContainerEngines } from './workloads/index.js';
import { serveBroker } from './broker/server.js';
import { SpaceSupervisor } from './spaces/supervisor.js';
import { LeaseScheduler } from './spaces/leases.js';
import { SpaceMover } from './spaces/mover.js';
import type { RecordedHead } from './spaces/archive.js';
import { Drainer } from './spaces/drainer.js';
import { sdkMoveTransport } from './spaces/move-client.js';
import { reconcile } from './spaces/reconcile.js';
import { SpaceNetworks } from './spaces/networks.js';
import { createApp } from './http/app.js';
import { createForwarder } from './http/forward.js';
import { defaultPublicNames } from './http/public-names.js';
import { createMetrics } from './metrics.js';
import { IdRangeWatch, checkIdRanges, daemonIdRanges, reserveIdRanges } from './spaces/id-ranges.js';
import { writeSecretFile } from './files.js';
import { createNodeIssuers } from './auth/issuers.js';
import { newId } from './ids.js';
import { ReservationKeys } from './spaces/reservation-keys.js';

export const VERSION = '0.1.0';

export interface NodeDrivers {
  cgroups: CgroupDriver;
  storage: StorageDriver;
  /** The spaces' container engines; absent: the node offers no containers (`unavailable`). */
  containers?: ContainerEngines | undefined;
  /** Absent: the node offers no VMs. */
  vms?: VmDriver | undefined;
  /** The spaces' firewall; required with containers or VMs (their networks fail closed without it). */
  firewall?: NetworkFirewall | undefined;
}

export interface NodeOptions {
  config: Config;
  logger: Logger;
  drivers: NodeDrivers;
  clock?: Clock;
  /** Total capacity; detected from the host when absent. */
  total?: Resources;
}

export interface RunningNode {
  server: Server;
  url: string;
  nodeId: string;
  tls: TlsMaterial;
  identity: NodeIdentity;
  devIssuer: DevIssuer | undefined;
  /** What the operator must hear at every start (also in the log): see configWarnings. */
  warnings: string[];
  service: SpaceService;
  broker: Broker;
  /** The spaces' workloads as a whole (stop all, restore, remove, reconcile). */
  workloads: WorkloadLifecycle;
  supervisor: SpaceSupervisor;
  leases: LeaseScheduler;
  repo: SpacesRepo;
  audit: AuditLog;
  ledger: Ledger;
  stop(): Promise<void>;
}

function detectTotal(config: Config): Resources {
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const memKb = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0);
  let storageBytes = config.capacity.storageBytes;
  if (storageBytes === 0) {
    mkdirSync(config.storage.root, { recursive: true, mode: 0o711 });
    const fs = statfsSync(config.storage.root);
    // Offer 90% of what is free now: the filesystem also holds the node's own state.
    storageBytes = Math.floor(fs.bavail * fs.bsize * 0.9);
  }
  return { cpuMillicores: availableParallelism() * 1000, memoryBytes: memKb * 1024, storageBytes };
}

function minus(a: Resources, b: { cpuMillicores: number; memoryBytes: number; storageBytes: number }): Resources {
  return {
    cpuMillicores: Math.max(0, a.cpuMillicores - b.cpuMillicores),
    memoryBytes: Math.max(0, a.memoryBytes - b.memoryBytes),
    storageBytes: Math.max(0, a.storageBytes - b.storageBytes),
  };
}

/**
 * Space processes run as their own uids and reach their homes below the storage root: every
 * directory above it must let others pass (o+x). Refused at boot, naming the culprit, rather
 * than as a space process that cannot start.
 */
function checkTraversable(root: string): void {
  for (let dir = resolve(root); ; dir = dirname(dir)) {
    const st = statSync(dir, { throwIfNoEntry: false });
    if (st && (st.mode & 0o001) === 0)
      throw new Error(`config storage.root: ${dir} is not traversable by space processes (it needs o+x)`);
    if (dir === '/') return;
  }
}

/** `/proc` hides other users' processes, or the daemon does not start (`spaces.hideProcesses`). */
async function hideTenantProcesses(how: Config['spaces']['hideProcesses'], logger: Logger): Promise<void> {
  if (how === 'require') {
    const mount = await readProcMount();
    if (!hidesProcesses(mount))
      throw new Error(
        `/proc is mounted with hidepid=${mount?.hidepid ?? '?'}: every local user can read tenants' command lines. Mount it with hidepid=invisible,gid=<the daemon's group> (e.g. in /etc/fstab), or set spaces.hideProcesses to "mount"`,
      );
    return;
  }
  const { changed, mount } = await hideProcesses(process.getgid?.() ?? 0);
  if (changed)
    logger.info({ mount }, 'remounted /proc with hidepid=invisible: local users see only their own processes');
}

function loadOrCreateNodeId(config: Config): string {
  if (config.nodeId) return config.nodeId;
  const path = join(config.stateDir, 'node-id');
  if (existsSync(path)) return readFileSync(path, 'utf8').trim();
  const host =
    hostname()
      .toLowerCase()
      .replace(/[^a-z0-9.-]/g, '-')
      .slice(0, 40) || 'node';
  const id = `${host}-${newId('n').slice(2, 10)}`;
  writeSecretFile(path, `${id}\n`);
  chmodSync(path, 0o644);
  return id;
}

export async function startNode(o: NodeOptions): Promise<RunningNode> {
  const { config } = o;
  const clock = o.clock ?? systemClock;
  const warnings = configWarnings(config);
  const cipher = cipherImplementation();
  if (!cipher.accelerated)
    warnings.push(
      `space data is encrypted by ${cipher.driver}, not a hardware-accelerated AES: encrypted I/O runs at a fraction of plain I/O (bench/storage)`,
    );
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  chmodSync(config.stateDir, 0o700);
  checkTraversable(config.storage.root);
  const nodeId = loadOrCreateNodeId(config);
  // Every line says which node wrote it, for logs gathered from many nodes.
  const logger = o.logger.child({ nodeId });
  // Before anything is handed out: no local account or delegation may hold a space's ids.
  const idRanges = daemonIdRanges({ ...config.spaces, subidBase: config.workloads.containers.subidBase });
  checkIdRanges(idRanges, config.spaces.idFiles);
  if (config.spaces.reserveIds)
    for (const line of reserveIdRanges(idRanges, config.spaces.idFiles))
      logger.info({ line }, "recorded the node's ids as root's delegation");
  const idWatch = new IdRangeWatch(idRanges, config.spaces.idFiles);
  // Before any tenant process runs: its command line is for its owner and root only.
  await hideTenantProcesses(config.spaces.hideProcesses, logger);
  for (const w of warnings) logger.warn({ listen: config.listen.host }, w);
  const identity = await loadOrCreateIdentity(config.stateDir);
  const devIssuer = config.auth.devIssuer ? loadOrCreateDevIssuer(config.stateDir, nodeId) : undefined;
  const tls = await loadOrCreateTls({ ...config.tls, stateDir: config.stateDir, names: [nodeId, hostname()] });

  const issuers = createNodeIssuers({
    config,
    devIssuer,
    logger: logger.child({ svc: 'issuers' }),
    clock,
    // A key that went must take the tokens it signed with it, cached or not.
    onKeysChanged: () => cachedVerifier.clear(),
  });
  const audiences = [nodeId, ...(config.cluster ? [config.cluster] : [])];
  const verifier = createTokenVerifier({
    issuers: issuers.policy,
    audiences,
    maxLifetimeSeconds: config.auth.maxTokenLifetimeSeconds,
    clockToleranceSeconds: config.auth.clockToleranceSeconds,
  });
  const cachedVerifier = cacheTokens(verifier);
  // In the background: an issuer that is down delays nothing, and is tried again on the first token.
  void issuers.warm();
  const verifyToken = (t: string | undefined) => cachedVerifier(t, { now: new Date(clock.now()) });

  const db = openDatabase(join(config.stateDir, 'node.db'));
  const net = config.workloads.network;
  // Ports are counted only where workloads have networks (the firewall publishes them).
  const portCount = o.drivers.firewall ? { ports: net.ports.last - net.ports.first + 1 } : {};
  const total = { ...(o.total ?? detectTotal(config)), ...portCount };
  const allocatable = { ...minus(total, config.capacity.farmerReserve), ...portCount };
  const repo = new SpacesRepo(db, { uidBase: config.spaces.uidBase, uidCount: config.spaces.uidCount });
  const ledger = new Ledger(db, { allocatable });
  const audit = new AuditLog(db);
  const refusals = new RefusalLog({ audit, clock, logger });

  const { cgroups, storage } = o.drivers;
  if ((o.drivers.containers || o.drivers.vms) && !o.drivers.firewall)
    throw new Error("a node with containers or VMs needs the spaces' firewall (drivers.firewall)");
  const ports = new PortsRepo(db, { clock });
  const networks = o.drivers.firewall
    ? new SpaceNetworks({
        firewall: o.drivers.firewall,
        repo,
        ports,
        range: net.ports,
        egress: net.egress,
        // Its VM uid (QEMU, in the host's namespace) and its containers' subordinate ids.
        workloadUids: (row) => {
          const vm = row.uid + config.spaces.uidCount;
          const subids = spaceWorkloadIds({ uidBase: config.spaces.uidBase, ...config.workloads.containers }, row.uid);
          return [
            { first: vm, last: vm },
            { first: subids.idMap.base, last: subids.idMap.base + subids.idMap.size - 1 },
          ];
        },
        logger: logger.child({ svc: 'network' }),
      })
    : undefined;
  const workloadRows = new WorkloadsRepo(db, { clock });
  const workloadContext = new WorkloadContext({
    networks,
    ports,
    nodeEgress: net.egress,
    portRange: net.ports,
    dns: net.dns,
    spaces: repo,
    workloads: workloadRows,
    audit,
    refusals,
    storage,
    cgroups,
    containers: o.drivers.containers,
    workloadIds: (uid) => spaceWorkloadIds({ uidBase: config.spaces.uidBase, ...config.workloads.containers }, uid),
    stopGraceSeconds: config.workloads.containers.stopGraceSeconds,
    vms: o.drivers.vms,
    cgroupParent: config.cgroups.parent,
    // The second half of the uid range: [uidBase + uidCount, uidBase + 2 * uidCount).
    workloadUid: (uid) => uid + config.spaces.uidCount,
    logger: logger.child({ svc: 'broker' }),
    clock,
    issuerKeys: () => issuers.remoteKeys(),
  });
  const kinds = nodeWorkloads(workloadContext);
  const broker = new Broker(workloadContext, kinds);
  const workloads = new WorkloadLifecycle(workloadContext, kinds.kinds);
  const supervisor = new SpaceSupervisor({
    cgroups,
    logger,
    runDir: config.runDir,
    cgroupParent: config.cgroups.parent,
    readyTimeoutMs: config.spaces.readySeconds * 1000,
    spaceApiMain: fileURLToPath(import.meta.resolve('@ocs/space-api/bundle')),
    // The install holding the bundle and node_modules (packages/space-api/dist/bundle.mjs → root).
    installRoot: resolve(dirname(fileURLToPath(import.meta.resolve('@ocs/space-api/bundle'))), '../../..'),
    configFor: async (spaceId) => {
      const row = repo.get(spaceId);
      if (!row || row.state !== 'active') return undefined;
      const { mountpoint } = await storage.info(spaceId);
      return {
        dataDir: spaceDataLayout(mountpoint).space,
        spaceId,
        ownerKey: row.ownerKey,
        org: row.org,
        resources: resourcesOf(row),
        auth: {
          // Key sets, never URIs: the space process has no network; it asks the broker for fresher ones.
          issuers: issuers.forSpace(),
          audiences,
          maxTokenLifetimeSeconds: config.auth.maxTokenLifetimeSeconds,
          clockToleranceSeconds: config.auth.clockToleranceSeconds,
          remoteKeys: config.auth.remoteKeys,
        },
        idleSeconds: config.spaces.idleSeconds,
        authorities: [...authorities],
        tlsFingerprint: tls.fingerprint,
      };
    },
    uidOf: (spaceId) => repo.get(spaceId)?.uid,
    serveBroker: (spaceId, socket) =>
      serveBroker({ broker, spaceId, socket, logger: logger.child({ svc: 'broker', spaceId }) }),
  });

  /**
   * Where a restored space's file owners go: from the ids it had on its source to this node's for
   * it. `record`: its subordinate ids are recorded now if they were not (at its first unlock);
   * otherwise the ones it would get are only computed (the check on its arrival).
   */
  const remapShifts = (row: SpaceRow, from: Placement, record: boolean): IdShift[] => {
    const ids = { uidBase: config.spaces.uidBase, ...config.workloads.containers };
    const derived = spaceWorkloadIds(ids, row.uid);
    const subids = record
      ? repo.workloadIds(row.id, derived).idMap
      : row.subidBase !== null
        ? { base: row.subidBase, size: derived.idMap.size }
        : derived.idMap;
    return [
      { from: from.uid, to: row.uid, count: 1 },
      { from: from.workloadUid, to: row.uid + config.spaces.uidCount, count: 1 },
      ...(from.subordinateIds
        ? [
            {
              from: from.subordinateIds.base,
              to: subids.base,
              count: Math.min(from.subordinateIds.size, subids.size),
            },
          ]
        : []),
    ];
  };
  const service = new SpaceService({
    repo,
    ledger,
    audit,
    cgroups,
    storage,
    processes: supervisor,
    workloads,
    logger,
    clock,
    unlockIdentity: identity.unlockIdentity,
    cgroupParent: config.cgroups.parent,
    apiCpuMillicores: config.spaces.apiCpuMillicores,
    graceSeconds: config.spaces.graceSeconds,
    maxLeaseSeconds: config.spaces.maxLeaseSeconds,
    ...(networks ? { published: (id: string) => networks.published(id) } : {}),
    workloadRows,
    remapFiles: async (row, root, from, mounts) => {
      const r = await remapOwnership(root, remapShifts(row, from, true), { mounts });
      logger.info({ spaceId: row.id, ...r }, 'restored space: file owners mapped to this node');
    },
    remapClash: (row, from) => {
      const clash = overlappingShifts(remapShifts(row, from, false));
      return clash && { from: clash[0].from, to: clash[1].to };
    },
  });

  // First: finishing a destroy below removes the space's rules, which needs the node's table.
  await networks?.reconcile();
  await reconcile({
    repo,
    ledger,
    audit,
    service,
    cgroups,
    storage,
    cgroupParent: config.cgroups.parent,
    apiCpuMillicores: config.spaces.apiCpuMillicores,
    logger,
  });
  await workloads.reconcile();
  const leases = new LeaseScheduler(repo, service, clock, logger);
  await leases.tick();
  leases.start();

  /** What an archive's head says of a space beyond its record: its workloads and its placement here. */
  const archiveHead = (row: SpaceRow): RecordedHead => ({
    workloads: workloadRows
      .list(row.id)
      .filter((w) => w.state === 'ready' && w.removingSince === null)
      .map((w) => ({
        id: w.id,
        kind: w.kind,
        name: w.name,
        cpuMillicores: w.cpuMillicores,
        memoryBytes: w.memoryBytes,
        storageBytes: w.storageBytes,
        pids: w.pids,
      })),
    placement: {
      uid: row.uid,
      workloadUid: row.uid + config.spaces.uidCount,
      // As recorded at first use; the size is the node's, the same for every space.
      subordinateIds:
        row.subidBase === null
          ? null
          : {
              base: row.subidBase,
              size: spaceWorkloadIds({ uidBase: config.spaces.uidBase, ...config.workloads.containers }, row.uid).idMap
                .size,
            },
      subnet: row.subnet,
    },
    published: ports.list(row.id).map((p) => ({ workloadId: p.workloadId, protocol: p.protocol, port: p.port })),
    // The owner's delegation goes with the space (checked again where it arrives).
    ...(row.delegation ? { delegation: row.delegation } : {}),
  });
  // A move's source end; a move cut short by a restart is aborted or committed from here.
  const moveTransport = sdkMoveTransport(identity.identityKey);
  const mover = new SpaceMover({
    service,
    repo,
    transport: moveTransport,
    identityKey: identity.identityKey,
    identityPublic: identity.identityPublic,
    tlsFingerprint: tls.fingerprint,
    archiveHead,
    hashes: nodeHashes,
    clock,
    storage,
    logger: logger.child({ svc: 'mover' }),
  });
  await mover.dropStaleSeeds();
  mover.resume();
  await service.resumeLocks();
  // Retiring the node; a drain cut short by a restart drains on.
  const drainer = new Drainer({
    repo,
    drains: new DrainsRepo(db),
    service,
    mover,
    transport: moveTransport,
    tlsFingerprint: tls.fingerprint,
    exportDir: config.drain.exportDir || join(config.stateDir, 'exports'),
    audit,
    clock,
    logger: logger.child({ svc: 'drain' }),
  });
  drainer.resume();

  const metrics = createMetrics({
    idOverlaps: () => idWatch.current.length,
    spacesByState: () => repo.countByState(),
    runningProcesses: () => supervisor.count,
    capacity: () => ({ allocatable, used: ledger.used() }),
  });
  refusals.count = (code) => metrics.refusals.inc({ code });
  // Summaries of dropped refusals are due once a window ends, also for a caller that went quiet.
  const refusalFlush = setInterval(() => refusals.flush(), 60_000);
  refusalFlush.unref();
  // The spaces' rules, watched: a flush of the ruleset behind the daemon is undone within seconds.
  let watching: Promise<void> | undefined;
  const firewallWatch = setInterval(() => {
    if (!networks || watching) return;
    watching = networks
      .restoreIfLost()
      .then((missing) => {
        if (missing.length > 0) metrics.firewallRestored.inc();
      })
      .catch((err: unknown) => logger.error({ err }, 'the network rules could not be checked or restored'))
      .finally(() => (watching = undefined));
  }, config.workloads.network.watchSeconds * 1000);
  firewallWatch.unref();
  // The ids, watched: an account or delegation that appears later is reported at once.
  const idCheck = setInterval(() => {
    try {
      const { overlaps, changed } = idWatch.check();
      if (changed && overlaps.length > 0)
        logger.error(
          { overlaps },
          "local accounts or delegations now hold ids of this node's spaces: remove them (they could become a space's uid)",
        );
      else if (changed) logger.info('no local account or delegation holds ids of this node any more');
    } catch (err) {
      logger.error({ err }, "the host's account and delegation files could not be read");
    }
  }, 30_000);
  idCheck.unref();
  const nodeInfo = (): NodeInfo => ({
    id: nodeId,
    version: VERSION,
    identityKey: identity.identityPublic,
    tlsFingerprint: tls.fingerprint,
    unlockRecipient: identity.unlockRecipient,
    storageBackend: storage.kind,
    storageCipher: cipherImplementation(),
    capacity: { total, farmerReserve: { ...config.capacity.farmerReserve }, allocatable, used: ledger.used() },
    spaces: repo.list({}).filter((r) => isStanding(r.state)).length,
    draining: service.draining,
  });
  // Filled once the port is known (listen may pick one); read by every request and space process.
  const authorities = new Set<string>();
  const app = createApp({
    authorities,
    tlsFingerprint: tls.fingerprint,
    service,
    archiveHead,
    mover,
    drainer,
    peers: config.moves.peers,
    repo,
    audit,
    refusals,
    verifyToken,
    nonceStore: openNonceStore(db),
    reservationKeys: new ReservationKeys(db, clock, (id) => {
      const state = repo.get(id)?.state;
      return state !== undefined && isStanding(state);
    }),
    clock,
    logger,
    nodeInfo,
    forwarder: createForwarder(supervisor, logger),
    registry: metrics.registry,
    metrics: metrics.http,
  });

  // requireHostHeader off: Node would answer a missing Host with an empty 400 of its own; the
  // authority check answers it with our JSON error instead.
  const server = createServer(
    { cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2', requireHostHeader: false },
    app.callback(),
  );
  server.keepAliveTimeout = 5000;
  // No deadline on a whole request: a restore's or an import's archive is one request body of
  // up to the space's size, and at this machine's speed Node's default (300 s) cut those over
  // about 35 GiB. Slow clients are bounded otherwise: the headers by `headersTimeout` (60 s),
  // a JSON body by `readBody`'s deadline (30 s); an archive is streamed by an authenticated
  // caller (a token and an owner's signature, or the import's source node) only.
  server.requestTimeout = 0;
  // Refusals of Node's own parser get our JSON error body too (not a bare status line).
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (socket.writable) socket.end(parserRefusalResponse(err.code));
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  for (const a of authoritySet(config.listen.publicNames ?? defaultPublicNames(config.listen.host), port))
    authorities.add(a);
  const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? 'localhost' : config.listen.host;
  const url = `https://${host}:${port}`;
  logger.info({ url, tlsFingerprint: tls.fingerprint }, 'node daemon listening');

  let stopped = false;
  return {
    server,
    url,
    nodeId,
    tls,
    identity,
    devIssuer,
    warnings,
    service,
    broker,
    workloads,
    supervisor,
    leases,
    repo,
    audit,
    ledger,
    async stop() {
      if (stopped) return;
      stopped = true;
      // No check of the rules may outlive the daemon (and make again what its owner then removes).
      clearInterval(firewallWatch);
      clearInterval(idCheck);
      await watching;
      // Stop accepting, drain with a deadline, stop children, close storage, close the database.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const deadline = setTimeout(() => server.closeAllConnections(), 5000);
      await closed;
      clearTimeout(deadline);
      await leases.stop();
      await drainer.close();
      mover.close();
      await supervisor.close();
      clearInterval(refusalFlush);
      refusals.flush(true);
      // Unlocked spaces stay mounted (their workloads outlive a daemon restart); what the
      // driver holds for itself, such as fscrypt's shared bind mount of <root>/mnt, goes once
      // no space needs it.
      try {
        await storage.close();
      } finally {
        db.close();
      }
    },
  };
}
