export { startNode, VERSION, type RunningNode, type NodeOptions, type NodeDrivers } from './node.js';
export { resolveConfig, loadConfigFile, DEFAULTS, type Config } from './config.js';
export { createLogger, type Logger } from './logger.js';
export { systemClock, type Clock } from './clock.js';
export { spaceCgroupLayout, spaceDataLayout, spaceRunDir, spaceWorkloadIds } from './spaces/layout.js';
export { openDatabase, SpacesRepo, WorkloadsRepo } from './state/index.js';
export { sandboxArgs, seccompProgram, DENIED_SYSCALLS, type SandboxSpec } from './spaces/sandbox.js';
export { spacesFirewall } from './workload-drivers.js';
