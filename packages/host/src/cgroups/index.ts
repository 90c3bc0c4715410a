export type { CgroupDriver, CgroupDriverOptions, CgroupLimits, CgroupUsage, V1Controller } from './types.js';
export { CPU_PERIOD_US, LIMIT_BOUNDS, parseCgroupPath, validateLimits } from './validate.js';
export { V1CgroupDriver, V1_DEVICE_RULES, V1_REQUIRED, type V1Options } from './v1.js';
export { V2CgroupDriver, V2_REQUIRED, type V2Options } from './v2.js';
export { detectCgroups, parseCgroupMounts, unifiedGroupOf, type CgroupMount, type DetectOptions } from './detect.js';
