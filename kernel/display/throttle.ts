/** A leading- and trailing-edge rate limit for display updates (at most one per interval, the last change always shown). */
export const MIN_INTERVAL_MS = 100;

export interface Throttle {
  /** Something changed: publish now if the last publish is an interval old, else once the interval ends. */
  changed(): void;
  /** Publishes now, whatever the interval says; the next interval counts from here. */
  flush(): void;
  /** Drops a publish still waiting; the caller publishes the final state itself. */
  cancel(): void;
}

/**
 * Rate-limits `publish` to one call per `intervalMs`, leading and trailing edge as the live charts do: a change after a
 * quiet interval publishes at once, changes within it are coalesced into one publish when it ends. `now` is the clock
 * (milliseconds), replaceable by a test's.
 */
export function throttle(publish: () => void, intervalMs = MIN_INTERVAL_MS, now: () => number = () => performance.now()): Throttle {
  let last = -Infinity;
  let timer: NodeJS.Timeout | null = null;
  const fire = () => {
    timer = null;
    publish();
    // Timed from when the message left, so that a slow publish never brings two closer than the interval.
    last = now();
  };
  const cancel = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  return {
    changed() {
      if (timer !== null) return;
      const wait = last + intervalMs - now();
      if (wait <= 0) fire();
      else {
        timer = setTimeout(() => {
          // A timer has no caller to throw to (an error here would take the kernel down); the caller's next
          // publish meets the same error, since a sink that failed once (a restart) fails again.
          try {
            fire();
          } catch {
            timer = null;
          }
        }, wait);
        timer.unref?.();
      }
    },
    flush() {
      cancel();
      fire();
    },
    cancel,
  };
}
