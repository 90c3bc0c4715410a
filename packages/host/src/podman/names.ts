/**
 * How our ids become Docker names and labels. Everything here is pure. The charsets are strict
 * on purpose: these strings end up in Docker references, label filters and glob patterns, so no
 * character may have a meaning there (no `*`, `/`, `:`, `=`, upper case, `-` in ids).
 */
import { createHash } from 'node:crypto';
import { OcsError } from '@ocs/protocol';
import { SPACE_ID_SOURCE } from '../space-id.js';

export { checkSpaceId, isSpaceId } from '../space-id.js';

/** Label keys on containers and networks. Images carry no labels of ours: see {@link imageRef}. */
export const LABEL_SPACE = 'ocs.space';
export const LABEL_CONTAINER = 'ocs.container';
export const LABEL_NAME = 'ocs.name';
export const LABEL_IMAGE = 'ocs.image';

const CONTAINER_ID = /^ctr_[a-z0-9]{1,40}$/;
/** The protocol's `Name`, further limited to Docker's path-component grammar (no `..`, no trailing separator). */
const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const DOCKER_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

export function checkContainerId(containerId: unknown): asserts containerId is string {
  if (typeof containerId !== 'string' || !CONTAINER_ID.test(containerId)) {
    throw new OcsError('invalid_request', 'containerId must look like ctr_<lowercase letters and digits>', {
      field: 'containerId',
    });
  }
}

/** A name the owner chose (image or container): lowercase, 1 to 63 characters, valid in a Docker reference. */
export function checkName(name: unknown, field = 'name'): asserts name is string {
  if (typeof name !== 'string' || !NAME.test(name) || !DOCKER_COMPONENT.test(name)) {
    throw new OcsError(
      'invalid_request',
      `${field} must be 1 to 63 of [a-z0-9._-], starting and ending with a letter or digit, without repeated . or _`,
      { field },
    );
  }
}

export function isContainerId(value: unknown): value is string {
  return typeof value === 'string' && CONTAINER_ID.test(value);
}

/** Docker name of a container: `ocs-<spaceId>-<containerId>`. */
export function containerName(spaceId: string, containerId: string): string {
  return `ocs-${spaceId}-${containerId}`;
}

/** Docker name of the space's network. */
export function networkName(spaceId: string): string {
  return `ocs-${spaceId}`;
}

/**
 * Linux name of the space's bridge: `ocsbr` + 10 hex digits of a hash of the space id (IFNAMSIZ
 * allows 15 characters). The fixed prefix makes one firewall rule cover all space bridges
 * (host-guard.ts), a second line behind the internal network that keeps the host out of reach.
 */
/** The prefix of every space bridge's name (iptables matches `ocsbr+`). */
export const BRIDGE_PREFIX = 'ocsbr';

export function bridgeName(spaceId: string): string {
  return `${BRIDGE_PREFIX}${createHash('sha256').update(spaceId).digest('hex').slice(0, 10)}`;
}

/** Repository prefix of a space's images: `ocs-<spaceId>/`. */
export function imageRepoPrefix(spaceId: string): string {
  return `ocs-${spaceId}/`;
}

/**
 * The only reference a space's image ever has: `ocs-<spaceId>/<name>:latest`. Images are found
 * by this name, not by label: an image's labels come from its own config, which the owner wrote,
 * so a label could claim any space.
 */
export function imageRef(spaceId: string, name: string): string {
  return `${imageRepoPrefix(spaceId)}${name}:latest`;
}

// podman names a loaded image without a registry `localhost/…`; the rest is the same.
const IMAGE_REF = new RegExp(`^(?:localhost/)?ocs-(${SPACE_ID_SOURCE})/([a-z0-9][a-z0-9_.-]{0,62}):latest$`);

/** The (space, name) of one of our image references, or undefined for anything else. */
export function parseImageRef(ref: string): { spaceId: string; name: string } | undefined {
  const m = IMAGE_REF.exec(ref);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  return { spaceId: m[1], name: m[2] };
}
