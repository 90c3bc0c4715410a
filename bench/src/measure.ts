/** Small timing helpers shared by the benchmarks: fixed-duration rate and percentiles. */
export function ratePerSecond(fn: () => void, seconds: number): number {
  for (let i = 0; i < 200; i++) fn(); // warm up the JIT
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < end) {
    for (let i = 0; i < 50; i++) fn();
    n += 50;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

export async function ratePerSecondAsync(fn: () => Promise<void>, seconds: number): Promise<number> {
  for (let i = 0; i < 200; i++) await fn();
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < end) {
    for (let i = 0; i < 20; i++) await fn();
    n += 20;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

export function report(name: string, result: Record<string, unknown>): void {
  console.log(`\n## ${name}`);
  for (const [k, v] of Object.entries(result))
    console.log(`${k.padEnd(42)} ${typeof v === 'number' ? fmt(v) : String(v)}`);
  console.log(`RESULT ${JSON.stringify({ bench: name, ...result })}`);
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n >= 100 ? n.toFixed(0) : n.toFixed(3);
}
