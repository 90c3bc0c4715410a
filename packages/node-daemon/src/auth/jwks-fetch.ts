/**
 * Fetches a remote issuer's JWKS over HTTPS: GET only, no redirects, a deadline and a size
 * bound, and optionally a CA of the operator's instead of the system's roots. Whatever goes
 * wrong becomes an Error with a fixed message (never the body), for the log; the key-set cache
 * turns it into a refusal code.
 */
import { request } from 'node:https';

export interface FetchJwksOptions {
  /** PEM: the only CAs the server's certificate may chain to. Default: Node's bundled roots. */
  ca?: string;
  timeoutMs?: number;
  maxBytes?: number;
}

/** A JWKS larger than this is not one. */
const DEFAULT_MAX_BYTES = 256 * 1024;
const DEFAULT_TIMEOUT_MS = 5000;

export function fetchJwks(url: string, o: FetchJwksOptions = {}): Promise<unknown> {
  const max = o.maxBytes ?? DEFAULT_MAX_BYTES;
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    if (u.protocol !== 'https:') return reject(new Error('a JWKS is only fetched over https'));
    const req = request(
      u,
      {
        method: 'GET',
        headers: { accept: 'application/jwk-set+json, application/json' },
        ...(o.ca !== undefined ? { ca: o.ca } : {}),
        // One connection per fetch: a fetch every few minutes gains nothing from keep-alive.
        agent: false,
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return reject(new Error(`the JWKS server answered ${res.statusCode}`));
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > max) req.destroy(new Error(`the JWKS is larger than ${max} bytes`));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown);
          } catch {
            reject(new Error('the JWKS is not JSON'));
          }
        });
      },
    );
    const deadline = setTimeout(
      () => req.destroy(new Error('the JWKS fetch timed out')),
      o.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    );
    req.once('close', () => clearTimeout(deadline));
    req.on('error', reject);
    req.end();
  });
}
