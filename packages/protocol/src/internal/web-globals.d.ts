// The protocol package compiles with `"types": []` so that no Node global leaks in. These are
// the few Web-standard globals it relies on, present in Node 24 and every browser alike.
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean });
  decode(input?: Uint8Array): string;
}
