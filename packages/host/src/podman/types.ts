/**
 * The container driver's contract with the node daemon's broker. The broker calls it on behalf of
 * one space at a time, through that space's own engine; every call names that space, and the
 * driver only ever sees, changes or removes engine objects that carry that space's label or name.
 */

/** One bind mount into a container. */
export interface ContainerMount {
  /**
   * Absolute, normalized host path inside the space's own storage. The broker checks that it is
   * inside the space; the driver checks that it is sane (no symlink anywhere on the way, a
   * directory or a regular file, not a system tree).
   */
  source: string;
  /** Absolute path inside the container; not `/`, not under `/proc` or `/sys`. */
  target: string;
  readOnly: boolean;
}

/** What the broker asks for. The driver re-checks all of it and adds the hardening itself. */
export interface ContainerSpec {
  /** Our space id (`sp_…`); goes into the container's name and its `ocs.space` label. */
  spaceId: string;
  /** Our container id (`ctr_…`); goes into the container's name and its `ocs.container` label. */
  containerId: string;
  /**
   * The owner's name for the container; also its alias on the space's network (which has no DNS,
   * so other containers do not resolve it).
   */
  name: string;
  /** The space-local image name given to {@link ContainerDriver.loadImage}. */
  image: string;
  /** Replaces the image's `Cmd` (its entrypoint stays). */
  command?: string[];
  env?: Record<string, string>;
  /** Thousandths of a CPU; 1000 = one CPU. */
  cpuMillicores: number;
  /** Memory limit; swap is refused (memory + swap = the same figure). */
  memoryBytes: number;
  /** Maximum number of tasks (processes and threads). */
  pids: number;
  /** cgroupfs path of the parent group, e.g. `/ocs/sp_x/workloads`; must exist and name the space. */
  cgroupParent: string;
  mounts: ContainerMount[];
  /** Capabilities to add back after dropping all; each must be in `ALLOWED_CAPABILITIES`. */
  capAdd: string[];
  readOnlyRootfs?: boolean;
  /** Its address on the space's network (from the daemon, so that published ports follow it); default: the engine picks. */
  address?: string;
  /** The resolvers in its resolv.conf; default: the engine's (the host's). */
  dns?: string[];
}

/** An image as one space sees it. */
export interface SpaceImage {
  name: string;
  /** `sha256:…` content id; equal for equal content, also across spaces. */
  dockerId: string;
  sizeBytes: number;
  /** ISO 8601 creation time from the image's own config. */
  created: string;
}

export interface ContainerStatus {
  /** Docker's state: created, running, paused, restarting, removing, exited or dead. */
  state: string;
  /** Set once the container has run and stopped. */
  exitCode?: number;
  /** The kernel's OOM killer killed a process of the container because it hit its memory limit. */
  oomKilled: boolean;
  startedAt?: string;
}

export interface ContainerSummary {
  containerId: string;
  name: string;
  state: string;
}

export interface ContainerLogs {
  /** stdout and stderr, interleaved in the order they were written, decoded as UTF-8. */
  text: string;
  /** More lines (or bytes, past the byte cap) exist than were returned. */
  truncated: boolean;
}

export interface ContainerStatsSample {
  /** Memory in use, page cache that the kernel can drop (inactive files) excluded, like `docker stats`. */
  memoryBytes: number;
  memoryLimitBytes: number;
  /** CPU time consumed since start, in nanoseconds. */
  cpuNanos: number;
  pids: number;
}

/** Per-call options for {@link ContainerDriver.loadImage}. */
export interface LoadImageOptions {
  /**
   * Where the tarball is spooled while it is checked. Put it on the space's own (encrypted,
   * budgeted) storage; defaults to the driver's `tmpDir`.
   */
  tmpDir?: string;
  /** Refuse tarballs larger than this with `budget_exceeded`; defaults to the driver's `maxImageBytes`. */
  maxBytes?: number;
}

export interface ContainerDriverOptions {
  /** The unix socket of the space's engine (`podman system service`); `DOCKER_HOST` is deliberately ignored. */
  socketPath: string;
  /** Default spool directory for image tarballs. Default: the OS temp directory. */
  tmpDir?: string;
  /** Default cap on an image tarball's size. Default 16 GiB. */
  maxImageBytes?: number;
  /** Where cgroup hierarchies are mounted, to check that a container's cgroup parent exists. Default `/sys/fs/cgroup`. */
  cgroupRoot?: string;
  /**
   * The space's own podman (see `SpaceEngines`): containers are created through libpod with the
   * space's subordinate id map, and the space's network gets the space's subnet.
   */
  podman: {
    idMap: { base: number; size: number };
    subnet: string;
    /** The engine's CNI directory as the daemon sees it: the space's network file goes there. */
    networksDir: string;
  };
}

/**
 * The only code that talks to a space's container engine. Every method takes the space it acts
 * for; an object of another space is `not_found`, never touched. Hardening is applied here
 * whatever the caller passes. Errors are `OcsError`s: `invalid_request`, `not_found`,
 * `conflict`, `budget_exceeded`, `unavailable` (the engine does not answer); anything else is an
 * internal error.
 */
export interface ContainerDriver {
  /**
   * Loads a `docker save` tarball holding exactly one image and names it
   * `ocs-<spaceId>/<name>:latest`. The tarball is checked before the engine sees it and its
   * manifest is rewritten, so the tags it brought are never applied (no name but ours appears
   * in the engine, no other name is re-pointed). `conflict` if the name exists (the
   * stream is then left unread); `invalid_request` for a malformed tarball or one with more than
   * one image; `budget_exceeded` past `maxBytes`.
   */
  loadImage(
    spaceId: string,
    name: string,
    tar: NodeJS.ReadableStream,
    options?: LoadImageOptions,
  ): Promise<{ dockerId: string; sizeBytes: number }>;
  listImages(spaceId: string): Promise<SpaceImage[]>;
  /** Removes the space's name for the image; the content goes when nothing else uses it. */
  removeImage(spaceId: string, name: string): Promise<void>;
  create(spec: ContainerSpec): Promise<{ dockerId: string }>;
  /** Starts the container (a running one is fine), after re-checking its bind mount sources. */
  start(spaceId: string, containerId: string): Promise<void>;
  /** SIGTERM, then SIGKILL after `timeoutSeconds` (default 10); a stopped container is fine. */
  stop(spaceId: string, containerId: string, timeoutSeconds?: number): Promise<void>;
  /** Kills if needed and removes the container with its anonymous volumes. */
  remove(spaceId: string, containerId: string): Promise<void>;
  inspect(spaceId: string, containerId: string): Promise<ContainerStatus>;
  list(spaceId: string): Promise<ContainerSummary[]>;
  logs(spaceId: string, containerId: string, opts: { tailLines: number }): Promise<ContainerLogs>;
  stats(spaceId: string, containerId: string): Promise<ContainerStatsSample>;
}
