/**
 * Group commit: concurrent submissions share one flush. A submission made while no flush runs
 * starts one at once (after the current task, so submissions of the same task join it): a lone
 * write waits for nothing. Submissions made while a flush runs queue and go together in the
 * next flush, which starts as soon as the running one ends — the window adapts to how long a
 * flush takes, with no timer. Each submission gets its own answer from the flush; a flush that
 * throws fails exactly the submissions in it, and later batches run as usual. Batches keep
 * submission order, and so does the order within a batch.
 */

/** The answer of one submission: its value, or the error it fails with. */
export type Settled<R> = { ok: true; value: R } | { ok: false; error: unknown };

/**
 * Handles one batch; returns one answer per item, in the order given. Throwing (or returning
 * the wrong number of answers) fails every item of the batch.
 */
export type FlushFn<T, R> = (items: readonly T[]) => Promise<readonly Settled<R>[]>;

/** Options of a {@link Batcher}. */
export interface BatcherOptions<T> {
  /** Most weight one batch carries; a heavier single item goes alone. @default Infinity */
  maxWeight?: number;
  /** Weight of one item. @default 1 */
  weight?: (item: T) => number;
}

interface Waiting<T, R> {
  item: T;
  resolve: (value: R) => void;
  reject: (error: unknown) => void;
}

/** Collects submissions and flushes them in batches, one flush at a time. */
export class Batcher<T, R> {
  #flush: FlushFn<T, R>;
  #maxWeight: number;
  #weight: (item: T) => number;
  #queue: Waiting<T, R>[] = [];
  #running = false;
  #batches = 0;

  /** Creates a batcher that hands batches to `flush`. */
  constructor(flush: FlushFn<T, R>, options: BatcherOptions<T> = {}) {
    this.#flush = flush;
    this.#maxWeight = options.maxWeight ?? Infinity;
    this.#weight = options.weight ?? (() => 1);
  }

  /** Items waiting for a flush (not counting the one running). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Whether nothing is queued and no flush runs. */
  get idle(): boolean {
    return !this.#running && this.#queue.length === 0;
  }

  /** Batches flushed so far. */
  get batches(): number {
    return this.#batches;
  }

  /** Queues `item`; resolves or rejects with its own answer from the flush that takes it. */
  submit(item: T): Promise<R> {
    const answer = new Promise<R>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
    });
    if (!this.#running) {
      this.#running = true;
      queueMicrotask(() => void this.#drain());
    }
    return answer;
  }

  async #drain(): Promise<void> {
    while (this.#queue.length) {
      const batch = this.#take();
      this.#batches++;
      let answers: readonly Settled<R>[];
      try {
        answers = await this.#flush(batch.map((w) => w.item));
        if (answers.length !== batch.length) {
          throw new Error(`Flush answered ${answers.length} of ${batch.length} items`);
        }
      } catch (error) {
        for (const w of batch) w.reject(error);
        continue;
      }
      for (const [i, w] of batch.entries()) {
        const a = answers[i]!;
        if (a.ok) w.resolve(a.value);
        else w.reject(a.error);
      }
    }
    this.#running = false;
  }

  /** The next batch: queued items in order, up to the weight limit (at least one). */
  #take(): Waiting<T, R>[] {
    let weight = 0;
    let n = 0;
    while (n < this.#queue.length) {
      const w = this.#weight(this.#queue[n]!.item);
      if (n > 0 && weight + w > this.#maxWeight) break;
      weight += w;
      n++;
    }
    return this.#queue.splice(0, n);
  }
}
