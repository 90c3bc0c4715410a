/**
 * Undo as you go, for multi-step host work (a record, then a container, then starting it; an
 * image, then a loop device, then a mount). Each step registers its undo; on failure the undos
 * run newest first and the caller rethrows its own error:
 *
 * ```ts
 * const undo = new Revert((err, step) => logger.warn({ err, step }, 'undo failed'));
 * try {
 *   undo.push('remove record', () => removeRecord(records, id));
 *   await writeRecord(records, id, spec);
 *   ...
 * } catch (err) {
 *   await undo.run();
 *   throw err;
 * }
 * ```
 *
 * An undo that fails does not stop the ones after it nor replace the caller's error: it goes to
 * the `onError` callback (a driver with no logger passes none) and into `run`'s result.
 * A step that can fail half-way (a create that leaves something behind before it throws)
 * registers its undo before it runs, so the undo must accept "nothing to undo".
 * (After Incus's `revert.New()` / `reverter.Fail()`.)
 */
export class Revert {
  private readonly steps: { step: string; undo: () => unknown }[] = [];

  constructor(private readonly onError?: (err: unknown, step: string) => void) {}

  /** Registers `undo` (named `step` for the log) to run if the work fails. */
  push(step: string, undo: () => unknown): void {
    this.steps.push({ step, undo });
  }

  /**
   * Runs the registered undos, newest first, each once, and forgets them. Never throws: returns
   * the undos that failed, each also given to `onError`.
   */
  async run(): Promise<{ step: string; err: unknown }[]> {
    const failed: { step: string; err: unknown }[] = [];
    for (let s = this.steps.pop(); s !== undefined; s = this.steps.pop()) {
      try {
        await s.undo();
      } catch (err) {
        failed.push({ step: s.step, err });
        try {
          this.onError?.(err, s.step);
        } catch {
          // A logger that throws must not stop the remaining undos.
        }
      }
    }
    return failed;
  }
}
