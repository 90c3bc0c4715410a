/** Constant-time comparison: digests and MACs must not leak how many bytes matched. */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Overwrites a secret in place; callers zero keys as soon as they are done with them. */
export function zeroize(...secrets: (Uint8Array | undefined)[]): void {
  for (const s of secrets) s?.fill(0);
}
