/**
 * Group commit: concurrent submissions share one flush. A submission made while no flush runs
 * starts one at once (after the current task, so submissions of the same task join it): a lone
 * write waits for nothing. Submissions made while the flushes allowed at once (`concurrency`,
 * default 1) run queue and go together in the next flush, which starts as soon as one ends —
 * the window adapts to how long a flush takes, with no timer. Each submission gets its own
 * answer from the flush; a flush that throws fails exactly the submissions in it, and later
 * batches run as usual. Batches start in submission order, and keep it within themselves.
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
  /**
   * Flushes that may run at once: with 2, the next batch starts while the one before waits (say,
   * for replicas), so both waits overlap. @default 1
   */
  concurrency?: number;
}

interface Waiting<T, R> {
  item: T;
  resolve: (value: R) => void;
  reject: (error: unknown) => void;
}

/** Collects submissions and flushes them in batches, at most `concurrency` flushes at a time. */
export class Batcher<T, R> {
  #flush: FlushFn<T, R>;
  #maxWeight: number;
  #weight: (item: T) => number;
  #concurrency: number;
  #queue: Waiting<T, R>[] = [];
  #inFlight = 0;
  #scheduled = false;
  #batches = 0;

  /** Creates a batcher that hands batches to `flush`. */
  constructor(flush: FlushFn<T, R>, options: BatcherOptions<T> = {}) {
    this.#flush = flush;
    this.#maxWeight = options.maxWeight ?? Infinity;
    this.#weight = options.weight ?? (() => 1);
    this.#concurrency = options.concurrency ?? 1;
  }

  /** Items waiting for a flush (not counting those of flushes running). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Whether nothing is queued and no flush runs. */
  get idle(): boolean {
    return this.#inFlight === 0 && !this.#scheduled && this.#queue.length === 0;
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
    this.#schedule();
    return answer;
  }

  /** Starts a flush after the current task, if one may start and something waits. */
  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#concurrency || !this.#queue.length) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#run();
    });
  }

  async #run(): Promise<void> {
    if (this.#inFlight >= this.#concurrency || !this.#queue.length) return;
    const batch = this.#take();
    this.#inFlight++;
    this.#batches++;
    try {
      let answers: readonly Settled<R>[];
      try {
        answers = await this.#flush(batch.map((w) => w.item));
        if (answers.length !== batch.length) {
          throw new Error(`Flush answered ${answers.length} of ${batch.length} items`);
        }
      } catch (error) {
        for (const w of batch) w.reject(error);
        return;
      }
      for (const [i, w] of batch.entries()) {
        const a = answers[i]!;
        if (a.ok) w.resolve(a.value);
        else w.reject(a.error);
      }
    } finally {
      this.#inFlight--;
      this.#schedule();
    }
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
