export { createSpaceApp, type SpaceAppDeps } from './app.js';
export { SpaceProcessConfig, loadConfig } from './config.js';
export { brokerClient, type BrokerCall } from './broker-client.js';
export { openSpaceState, type SpaceState, type FileRecord } from './state.js';
