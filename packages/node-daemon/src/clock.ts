/** Injected time, so leases and token checks can be tested with a frozen or advanced clock. */
export interface Clock {
  /** Unix milliseconds. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
