/** What people type for sizes, CPUs and durations, to what the API takes. */

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** `4GiB`, `512MiB`, `1.5G` (binary), `100MB` (decimal), `1048576`. */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new UsageError(`${what} ${JSON.stringify(text)} is not a size like 512MiB or 4GiB`);
  return Math.round(Number(m[1]) * unit);
}

/** `2` cores, `0.5`, `500m` (millicores) to millicores. */
export function parseCpu(text: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)(m?)\s*$/.exec(text);
  if (!m) throw new UsageError(`cpu ${JSON.stringify(text)} is not a CPU count like 2, 0.5 or 500m`);
  return Math.round(m[2] ? Number(m[1]) : Number(m[1]) * 1000);
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, '': 1 };

/** `24h`, `30m`, `7d`, `90s`, `3600` to seconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^\s*([0-9]+)\s*([smhd]?)\s*$/.exec(text);
  if (!m) throw new UsageError(`${what} ${JSON.stringify(text)} is not a duration like 30m, 24h or 7d`);
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (seconds <= 0) return 'now';
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return d > 0 ? `${d}d${h}h` : h > 0 ? `${h}h${m}m` : m > 0 ? `${m}m` : `${Math.floor(seconds)}s`;
}

/** A mistake in how the command was called: exit code 2, and no node was asked anything. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A whole number of something (ports, say) from a flag: digits only. */
export function parseCount(text: string, what: string): number {
  if (!/^[0-9]{1,6}$/.test(text)) throw new UsageError(`${what}: a whole number, e.g. 2 (got ${JSON.stringify(text)})`);
  return Number(text);
}

/**
 * What `ocs net publish` forwards to: `[container/|vm/]<name>:<port>[/tcp|/udp]` (a bare name is
 * a container's).
 */
export function parsePublishTarget(text: string): {
  target: { kind: 'container' | 'vm'; name: string };
  port: number;
  protocol: 'tcp' | 'udp';
} {
  const m = /^(?:(container|vm)\/)?([a-z0-9][a-z0-9_.-]{0,62}):([0-9]{1,5})(?:\/(tcp|udp))?$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || !m[2] || port < 1 || port > 65535)
    throw new UsageError(
      `expected [container/|vm/]<name>:<port>[/tcp|/udp], e.g. web:8080 (got ${JSON.stringify(text)})`,
    );
  return {
    target: { kind: (m[1] ?? 'container') as 'container' | 'vm', name: m[2] },
    port,
    protocol: (m[4] ?? 'tcp') as 'tcp' | 'udp',
  };
}
