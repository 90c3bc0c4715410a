/** IPv4 addresses as unsigned 32-bit integers, for the few places that do arithmetic on them. */
export const ipv4ToInt = (ip: string): number => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0) >>> 0;
export const intToIpv4 = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

/** Every address from `first` to `last`, both included. */
export function ipv4Range(first: string, last: string): string[] {
  const out: string[] = [];
  for (let n = ipv4ToInt(first); n <= ipv4ToInt(last); n++) out.push(intToIpv4(n));
  return out;
}
