/**
 * The space process's only way to the host: JSON operations over HTTP/2 on the broker
 * connection it inherited from the daemon (`BROKER_FD`, one end of a socket pair with no name in
 * the file system). The broker knows who we are from the connection; we send no space id, and it
 * trusts nothing we send. One connection carries every call at once, each on its own stream.
 */
import { connect } from 'node:http2';
import type { Duplex } from 'node:stream';
import { OcsError, isErrorCode, type BrokerArgs, type BrokerOp, type BrokerResult } from '@ocs/protocol';

export type BrokerCall = <O extends BrokerOp>(op: O, args: BrokerArgs<O>) => Promise<BrokerResult<O>>;

export function brokerClient(connection: Duplex): BrokerCall {
  const session = connect('http://broker', { createConnection: () => connection });
  // A connection that fails fails every call on it (`unavailable`); nothing to do here.
  session.on('error', () => undefined);
  return <O extends BrokerOp>(op: O, args: BrokerArgs<O>) =>
    new Promise<BrokerResult<O>>((resolve, reject) => {
      const unavailable = () => reject(new OcsError('unavailable', 'the broker is not reachable'));
      if (session.closed || session.destroyed) return unavailable();
      const body = Buffer.from(JSON.stringify(args));
      let req;
      try {
        req = session.request({
          ':method': 'POST',
          ':path': `/${op}`,
          'content-type': 'application/json',
          'content-length': body.length,
        });
      } catch {
        return unavailable();
      }
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (headers) => (status = Number(headers[':status'])));
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('error', () => reject(new OcsError('unavailable', 'the broker connection failed')));
      req.on('end', () => {
        // Ended with no answer at all: the connection went away under the call.
        if (status === 0) return unavailable();
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return reject(new OcsError('internal', 'the broker answered garbage'));
        }
        if (status === 200) return resolve(parsed as BrokerResult<O>);
        const e = (parsed as { error?: { code?: string; message?: string; details?: Record<string, unknown> } }).error;
        if (e?.code && isErrorCode(e.code)) return reject(new OcsError(e.code, e.message ?? e.code, e.details));
        reject(new OcsError('internal', 'the broker refused without a code'));
      });
      // A stream closed with no answer (the connection went away meanwhile) must not hang a call.
      req.on('close', unavailable);
      req.end(body);
    });
}
