/**
 * The response to a request Node's own HTTP parser refused before any handler ran (oversized
 * headers, no Host, a raw non-ASCII path, broken framing): the same JSON error body as every
 * other refusal, instead of Node's bare status line. Pure: the server writes it to the socket.
 */
import { OcsError, type ErrorCode } from './errors.js';

/** Node's parser error code (`err.code` of a 'clientError') → our refusal. */
export function parserRefusal(parserCode: string | undefined): OcsError {
  const map: Record<string, [ErrorCode, string]> = {
    HPE_HEADER_OVERFLOW: ['headers_too_large', 'the request headers are too large'],
    ERR_HTTP_REQUEST_TIMEOUT: ['invalid_request', 'the request was not received in time'],
  };
  const [code, message] = map[parserCode ?? ''] ?? ['invalid_request', 'the request is not valid HTTP/1.1'];
  return new OcsError(code, message);
}

/** The whole HTTP/1.1 response for {@link parserRefusal}, closing the connection. */
export function parserRefusalResponse(parserCode: string | undefined): string {
  const e = parserRefusal(parserCode);
  const body = JSON.stringify(e.toBody());
  const reason =
    e.status === 431 ? 'Request Header Fields Too Large' : e.status === 408 ? 'Request Timeout' : 'Bad Request';
  return (
    `HTTP/1.1 ${e.status} ${reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n` +
    `content-length: ${new TextEncoder().encode(body).length}\r\nconnection: close\r\n\r\n${body}`
  );
}
