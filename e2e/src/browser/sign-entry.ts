/**
 * Bundled for the browser (esbuild, IIFE) by browser.test.ts: the SDK's key and signing code as
 * a web page runs it. The key is made in the page (Web Crypto randomness) and never leaves it;
 * the page hands out public keys and signed headers only.
 */
import { contentDigest, generatePrivateKey, signRequest, type Ed25519PrivateKey } from '@ocs/protocol';

let key: Ed25519PrivateKey | undefined;

const api = {
  newKey(): { publicKey: string; fingerprint: string } {
    key = generatePrivateKey();
    return { publicKey: key.publicKey.toBase64url(), fingerprint: key.publicKey.fingerprint() };
  },
  /** Headers of a request signed with the page's key (and its Content-Digest when it has a body). */
  async sign(method: string, url: string, headers: Record<string, string>, body?: string) {
    if (!key) throw new Error('no key');
    const k = key;
    const all: Record<string, string> = { ...headers, host: new URL(url).host };
    if (body !== undefined) {
      const bytes = new TextEncoder().encode(body);
      all['content-type'] = 'application/json';
      all['content-length'] = String(bytes.length);
      all['content-digest'] = contentDigest(bytes);
    }
    const sig = await signRequest(
      { method, url, headers: all },
      { keyId: k.publicKey.fingerprint(), sign: (m) => k.sign(m) },
    );
    return { ...all, ...sig };
  },
};

(globalThis as unknown as { ocs: typeof api }).ocs = api;
