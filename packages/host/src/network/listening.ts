/**
 * Which ports host processes hold now, read from the kernel's socket tables (/proc/net/tcp,
 * tcp6, udp, udp6 of the daemon's own network namespace, the host's). A published port must
 * never be one of them: its DNAT rule would take the traffic of the host's own service (the
 * daemon's API, sshd) and hand it to a tenant's container.
 */
import { readFile } from 'node:fs/promises';

/** TCP sockets in LISTEN (state 0A); UDP sockets bound to a port (any state). */
export function parseSocketTable(text: string, protocol: 'tcp' | 'udp'): number[] {
  const ports: number[] = [];
  for (const line of text.split('\n').slice(1)) {
    // "  0: 00000000:20FB 00000000:0000 0A ..." local address, remote address, state
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const local = f[1]!;
    const state = f[3]!;
    if (protocol === 'tcp' && state !== '0A') continue;
    const port = Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
    if (Number.isInteger(port) && port > 0) ports.push(port);
  }
  return ports;
}

/** The ports host processes hold for `protocol`, over IPv4 and IPv6. */
export async function hostPortsInUse(protocol: 'tcp' | 'udp', procNet = '/proc/net'): Promise<Set<number>> {
  const inUse = new Set<number>();
  for (const file of [protocol, `${protocol}6`]) {
    let text: string;
    try {
      text = await readFile(`${procNet}/${file}`, 'utf8');
    } catch (err) {
      // No IPv6 in this kernel: no tcp6 table. Anything else is a failure to know, and fails closed.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && file.endsWith('6')) continue;
      throw err;
    }
    for (const p of parseSocketTable(text, protocol)) inUse.add(p);
  }
  return inUse;
}
