/** A container engine per space (rootful podman, its store in the space's encrypted storage). */
export { SpaceEngines, ping as pingEngine, type EngineSpace, type SpaceEnginesOptions } from './engines.js';
export { engineLayout, type EngineLayout } from './config-files.js';
