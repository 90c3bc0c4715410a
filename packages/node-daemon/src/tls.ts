/**
 * TLS material: the operator's certificate from config, or a self-signed one made at first
 * start (ECDSA P-256, with the node id and localhost as names) whose fingerprint clients pin.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '@ocs/host';
import { readSecretFile, writeSecretFile } from './files.js';

export interface TlsMaterial {
  cert: string;
  key: string;
  /** SHA-256 of the DER certificate, upper-case hex with colons (as openssl and browsers show it). */
  fingerprint: string;
}

export async function loadOrCreateTls(opts: {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  stateDir: string;
  names: string[];
}): Promise<TlsMaterial> {
  let certPath = opts.certFile;
  let keyPath = opts.keyFile;
  if (certPath === undefined || keyPath === undefined) {
    certPath = join(opts.stateDir, 'tls', 'cert.pem');
    keyPath = join(opts.stateDir, 'tls', 'key.pem');
    if (!existsSync(certPath) || !existsSync(keyPath)) await selfSign(certPath, keyPath, opts.names);
  }
  const cert = readFileSync(certPath, 'utf8');
  const key = readSecretFile(keyPath);
  if (key === undefined) throw new Error(`TLS key ${keyPath} is missing`);
  return { cert, key, fingerprint: new X509Certificate(cert).fingerprint256 };
}

async function selfSign(certPath: string, keyPath: string, names: string[]): Promise<void> {
  const san = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', ...names.map((n) => `DNS:${n}`)].join(',');
  const tmpKey = `${keyPath}.new`;
  const tmpCert = `${certPath}.new`;
  writeSecretFile(tmpKey, '');
  // openssl writes the key straight into the 0600 file created above.
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    tmpKey,
    '-out',
    tmpCert,
    '-days',
    '825',
    '-subj',
    `/CN=${names[0] ?? 'ocs-node'}`,
    '-addext',
    `subjectAltName=${san}`,
  ]);
  writeSecretFile(keyPath, readFileSync(tmpKey));
  writeSecretFile(certPath, readFileSync(tmpCert));
  for (const f of [tmpKey, tmpCert]) rmSync(f, { force: true });
}
