export { createSpaceApp, type SpaceAppDeps } from './app.js';
export { SpaceProcessConfig, loadConfig } from './config.js';
