/**
 * The space process's only way to the host: JSON operations on its broker socket. The broker
 * knows who we are from the socket; we send no space id, and it trusts nothing we send.
 */
import { request } from 'node:http';
import { OcsError, isErrorCode, type BrokerArgs, type BrokerOp, type BrokerResult } from '@ocs/protocol';

export type BrokerCall = <O extends BrokerOp>(op: O, args: BrokerArgs<O>) => Promise<BrokerResult<O>>;

export function brokerClient(socketPath: string): BrokerCall {
  return <O extends BrokerOp>(op: O, args: BrokerArgs<O>) =>
    new Promise<BrokerResult<O>>((resolve, reject) => {
      const body = Buffer.from(JSON.stringify(args));
      const req = request(
        {
          socketPath,
          method: 'POST',
          path: `/${op}`,
          headers: { 'content-type': 'application/json', 'content-length': body.length },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', () => reject(new OcsError('unavailable', 'the broker connection failed')));
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              return reject(new OcsError('internal', 'the broker answered garbage'));
            }
            if (res.statusCode === 200) return resolve(parsed as BrokerResult<O>);
            const e = (parsed as { error?: { code?: string; message?: string; details?: Record<string, unknown> } })
              .error;
            if (e?.code && isErrorCode(e.code)) return reject(new OcsError(e.code, e.message ?? e.code, e.details));
            reject(new OcsError('internal', 'the broker refused without a code'));
          });
        },
      );
      req.on('error', () => reject(new OcsError('unavailable', 'the broker is not reachable')));
      req.end(body);
    });
}
