/**
 * Reads back the few facts the driver needs from the XML libvirt returns (its own formatting of
 * a domain we defined): our metadata, the console file, disk sources and the partition. This
 * is not a general XML parser; it relies on libvirt's regular output (one element per tag,
 * quoted attributes, entities for special characters), which is all it is ever given.
 */
import { METADATA_NS } from './names.js';

/** What we stored in the domain's `<metadata>`. */
export interface OcsMetadata {
  space: string;
  vm: string;
  name: string;
  kernel?: string;
  initrd?: string;
  storageRoot?: string;
  /** The space bridge its interface is on, and the gateway (`a.b.c.d/n`) the bridge must hold. */
  bridge?: string;
  gateway?: string;
}

/** The facts of one domain XML the driver uses. */
export interface DomainFacts {
  type?: string;
  metadata?: OcsMetadata;
  consolePath?: string;
  diskPaths: string[];
  partition?: string;
  /** The uid QEMU runs as (`<seclabel model="dac"><label>+uid:+gid</label>`), when set. */
  runAsUid?: number;
}

function unescape(value: string): string {
  return value.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|quot|apos|amp);/g, (_m, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' } as Record<string, string>)[e] ?? '';
  });
}

/** Attributes of one start tag's text (the part after the tag name). */
export function parseAttributes(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/([\w:.-]+)\s*=\s*(?:'([^']*)'|"([^"]*)")/g)) {
    if (m[1] !== undefined) out.set(m[1], unescape(m[2] ?? m[3] ?? ''));
  }
  return out;
}

function metadataOf(xml: string): OcsMetadata | undefined {
  for (const m of xml.matchAll(/<([\w.-]+):vm\b([^>]*)>/g)) {
    const prefix = m[1];
    const attrs = parseAttributes(m[2] ?? '');
    if (prefix === undefined || attrs.get(`xmlns:${prefix}`) !== METADATA_NS) continue;
    const space = attrs.get('space');
    const vm = attrs.get('vm');
    const name = attrs.get('name');
    if (space === undefined || vm === undefined || name === undefined) return undefined;
    const md: OcsMetadata = { space, vm, name };
    for (const k of ['kernel', 'initrd', 'storageRoot', 'bridge', 'gateway'] as const) {
      const v = attrs.get(k);
      if (v !== undefined) md[k] = v;
    }
    return md;
  }
  return undefined;
}

/** Extracts {@link DomainFacts} from a domain XML as libvirt formats it. */
export function readDomainFacts(xml: string): DomainFacts {
  const facts: DomainFacts = { diskPaths: [] };
  const domain = /<domain\b([^>]*)>/.exec(xml);
  const type = domain ? parseAttributes(domain[1] ?? '').get('type') : undefined;
  if (type !== undefined) facts.type = type;
  const md = metadataOf(xml);
  if (md) facts.metadata = md;
  const serial = /<serial\b[^>]*>\s*<source\b([^>]*)>/.exec(xml);
  const consolePath = serial ? parseAttributes(serial[1] ?? '').get('path') : undefined;
  if (consolePath !== undefined) facts.consolePath = consolePath;
  for (const d of xml.matchAll(/<disk\b[^>]*>([\s\S]*?)<\/disk>/g)) {
    const src = /<source\b([^>]*)>/.exec(d[1] ?? '');
    const file = src ? parseAttributes(src[1] ?? '').get('file') : undefined;
    if (file !== undefined) facts.diskPaths.push(file);
  }
  const partition = /<partition>([^<]*)<\/partition>/.exec(xml);
  if (partition?.[1] !== undefined) facts.partition = unescape(partition[1]);
  const label = /<seclabel\b[^>]*model=['"]dac['"][^>]*>\s*<label>\+(\d+):\+\d+<\/label>/.exec(xml);
  if (label?.[1] !== undefined) facts.runAsUid = Number(label[1]);
  return facts;
}
