/** The space process's start-up facts, written by the daemon (public data only). */
import { readFileSync } from 'node:fs';
import { SpaceProcessConfig, validate } from '@ocs/protocol';

export { SpaceProcessConfig };

export function loadConfig(path: string): SpaceProcessConfig {
  return validate(SpaceProcessConfig, JSON.parse(readFileSync(path, 'utf8')));
}
