/**
 * What the daemon means by a live or a standing space, named once. The states themselves are the
 * protocol's (`SPACE_STATES`); the moves between them are `canTransition` in spaces-repo.ts.
 */
import { SPACE_STATES, assertNever, type SpaceState } from '@ocs/protocol';

/**
 * Live: made or being made, and neither failed nor on its way out. A live space may hold
 * workloads and a network, and its lease can be renewed.
 */
export function isLive(state: SpaceState): boolean {
  switch (state) {
    case 'creating':
    case 'active':
    case 'locked':
    case 'expired':
    case 'importing': // a move's ends hold the space's uid, storage and network like a locked space
    case 'prepared':
    case 'moving':
    case 'committing':
    case 'locking':
      return true;
    case 'destroying':
    case 'destroyed':
    case 'failed':
      return false;
    default:
      return assertNever(state, 'space state');
  }
}

/** The live states as an SQL list: `state IN ${LIVE_STATES_SQL}`. */
export const LIVE_STATES_SQL = `(${SPACE_STATES.filter(isLive)
  .map((s) => `'${s}'`)
  .join(',')})`;

/**
 * Standing: neither failed nor destroyed. A standing space may still use the machine (one being
 * destroyed too), counts among the node's spaces, holds its capacity and its reservation key.
 */
export function isStanding(state: SpaceState): boolean {
  return state !== 'failed' && state !== 'destroyed';
}
