/**
 * Runs tasks one at a time per key, in the order they were asked for, while other keys go on
 * at once. The drivers' check-then-act sequences hold one: a space's storage (mount, lock,
 * rotate), its image names and its network, a libvirt domain, the nftables ruleset, cgroup
 * creation. A task that fails does not stop the next; its caller gets the error. A key with
 * nothing running or queued holds no memory.
 *
 * Written here, not taken from npm: async-mutex has no keys (a map of mutexes and their cleanup
 * would be most of this file again), and async-lock refuses a key's 1001st waiting task by
 * default (`maxPending`), a limit no caller of ours has.
 */
export class KeyedLock {
  /** Per key, the promise that settles when its last queued task has; it never rejects. */
  private readonly tails = new Map<string, Promise<void>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const result = (this.tails.get(key) ?? Promise.resolve()).then(fn);
    const tail = result.then(settled, settled);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /** Keys with a task running or queued. */
  get size(): number {
    return this.tails.size;
  }
}

function settled(): void {}
