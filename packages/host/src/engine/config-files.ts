/**
 * The configuration a space's podman reads. Pure: the files are rendered from the space's
 * layout, so a test can read exactly what the engine is told. Everything points into the
 * space: the image store and the containers' logs (`k8s-file`, inside the store) live in its
 * encrypted storage, the runtime state in its run directory, and no registry is configured
 * (a space loads its images; nothing is ever pulled).
 */
import { join } from 'node:path';

export interface EngineLayout {
  /** Root-owned directory in the space's encrypted storage (the space cannot reach it). */
  dataDir: string;
  /** The image store (graphroot): layers, containers' writable layers, their logs, libpod's database. */
  storage: string;
  /** Bound over /var/lib/containers and /var/lib/cni inside the engine's mount namespace. */
  varLib: string;
  varLibCni: string;
  /** Bound over /etc/cni/net.d: the space's network definition. */
  networks: string;
  /** TMPDIR and podman's image copy directory: image loads spool here, inside the space's budget. */
  tmp: string;
  /** containers.conf, storage.conf, registries.conf. */
  conf: string;
  /** The engine's own stderr (warnings); inside the space because it names containers. */
  log: string;
  /** What was running when the space was locked, restored by unlock. */
  runningAtLock: string;
  /** tmpfs directory of the host, root 0700; removed when the engine stops. */
  runDir: string;
  runRoot: string;
  libpodTmp: string;
  runcRoot: string;
  netns: string;
  socket: string;
  anchorPid: string;
}

export function engineLayout(dataDir: string, runDir: string): EngineLayout {
  return {
    dataDir,
    storage: join(dataDir, 'storage'),
    varLib: join(dataDir, 'var-lib-containers'),
    varLibCni: join(dataDir, 'var-lib-cni'),
    networks: join(dataDir, 'networks'),
    tmp: join(dataDir, 'tmp'),
    conf: join(dataDir, 'conf'),
    log: join(dataDir, 'engine.log'),
    runningAtLock: join(dataDir, 'running-at-lock.json'),
    runDir,
    // Short: podman refuses a runroot longer than 50 characters (conmon's socket paths).
    runRoot: join(runDir, 'rr'),
    libpodTmp: join(runDir, 'libpod'),
    runcRoot: join(runDir, 'runc'),
    netns: join(runDir, 'netns'),
    socket: join(runDir, 'engine.sock'),
    anchorPid: join(runDir, 'anchor.pid'),
  };
}

/** Host paths replaced inside the engine's mount namespace, and with what. */
export function namespaceBinds(l: EngineLayout): { target: string; source: string }[] {
  return [
    { target: '/var/lib/containers', source: l.varLib },
    { target: '/var/lib/cni', source: l.varLibCni },
    { target: '/etc/cni/net.d', source: l.networks },
    { target: '/run/runc', source: l.runcRoot },
    { target: '/run/netns', source: l.netns },
  ];
}

/** Per-container log cap, inside the space (its storage bounds the total). */
export const LOG_SIZE_MAX = 8 * 1024 * 1024;

export function containersConf(l: EngineLayout): string {
  return [
    '[containers]',
    'log_driver = "k8s-file"',
    `log_size_max = ${LOG_SIZE_MAX}`,
    // runc's default (1048576 open files) is above the hard limit of our machines.
    'default_ulimits = ["nofile=1024:1024"]',
    'init_path = "/usr/bin/catatonit"',
    '',
    '[engine]',
    'cgroup_manager = "cgroupfs"',
    'runtime = "runc"',
    // The event log would name every container and image: none is kept.
    'events_logger = "none"',
    `tmp_dir = ${JSON.stringify(l.libpodTmp)}`,
    'image_default_transport = "docker-archive:"',
    `image_copy_tmp_dir = ${JSON.stringify(l.tmp)}`,
    '',
    '[network]',
    'network_backend = "cni"',
    `network_config_dir = ${JSON.stringify(l.networks)}`,
    'cni_plugin_dirs = ["/usr/lib/cni"]',
    '',
  ].join('\n');
}

/**
 * podman 4.3's containers/storage refuses the kernel's overlay on a ZFS graphroot (OpenZFS 2.2+
 * supports it, containers/storage 1.45+ knows): there the layers are mounted by fuse-overlayfs,
 * which also shifts the space's user ids, in the engine's cgroup and namespace.
 */
export const FUSE_OVERLAYFS = '/usr/bin/fuse-overlayfs';

/** The overlay driver's options: in storage.conf and, because podman drops them there once `--root` is given, on its command line. */
export function overlayOptions(o: { mountProgram?: string } = {}): Record<string, string> {
  return { mountopt: 'nodev', ...(o.mountProgram === undefined ? {} : { mount_program: o.mountProgram }) };
}

export function storageConf(l: EngineLayout, o: { mountProgram?: string } = {}): string {
  return [
    '[storage]',
    'driver = "overlay"',
    `graphroot = ${JSON.stringify(l.storage)}`,
    `runroot = ${JSON.stringify(l.runRoot)}`,
    '',
    '[storage.options.overlay]',
    ...Object.entries(overlayOptions(o)).map(([k, v]) => `${k} = ${JSON.stringify(v)}`),
    '',
  ].join('\n');
}

/** No registry: a space's images come only from its own uploads. */
export function registriesConf(): string {
  return ['unqualified-search-registries = []', 'short-name-mode = "disabled"', ''].join('\n');
}

/** The environment podman runs with: its three config files and nothing of the daemon's own. */
export function engineEnv(l: EngineLayout): Record<string, string> {
  return {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    LC_ALL: 'C',
    HOME: l.dataDir,
    TMPDIR: l.tmp,
    CONTAINERS_CONF: join(l.conf, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: join(l.conf, 'storage.conf'),
    CONTAINERS_REGISTRIES_CONF: join(l.conf, 'registries.conf'),
  };
}

/** podman's global flags: the same on every start, so conmon's cleanup command matches. */
export function podmanGlobalArgs(l: EngineLayout, o: { mountProgram?: string } = {}): string[] {
  return [
    ...Object.entries(overlayOptions(o)).flatMap(([k, v]) => ['--storage-opt', `overlay.${k}=${v}`]),
    '--root',
    l.storage,
    '--runroot',
    l.runRoot,
    '--tmpdir',
    l.libpodTmp,
    '--cgroup-manager',
    'cgroupfs',
    '--runtime',
    'runc',
    '--events-backend',
    'none',
    '--network-config-dir',
    l.networks,
    '--log-level',
    'warn',
  ];
}
