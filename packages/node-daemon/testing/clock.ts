import type { Clock } from '#src/clock.js';

/** A clock that stands still until a test advances it. */
export class ManualClock implements Clock {
  constructor(private t: number) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}
