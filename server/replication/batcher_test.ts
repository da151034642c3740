import assert from "node:assert/strict";
import { Batcher, type Settled } from "./batcher.ts";

/** A flush the test completes by hand, recording every batch it was given. */
function manualFlush<T>() {
  const batches: T[][] = [];
  const releases: (() => void)[] = [];
  const flush = async (items: readonly T[]): Promise<Settled<T>[]> => {
    batches.push([...items]);
    await new Promise<void>((r) => releases.push(r));
    return items.map((value) => ({ ok: true, value }));
  };
  return { batches, releases, flush };
}

/** Lets queued microtasks and promise callbacks run. */
const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("batcher: a lone submission is flushed at once, alone", async () => {
  const batches: number[][] = [];
  const b = new Batcher<number, number>((items) => {
    batches.push([...items]);
    return Promise.resolve(items.map((n) => ({ ok: true, value: n * 10 })));
  });
  assert.deepEqual(await b.submit(7), 70);
  assert.deepEqual(batches, [[7]]);
});

Deno.test("batcher: submissions made while a flush runs share the next flush, in order", async () => {
  const { batches, releases, flush } = manualFlush<number>();
  const b = new Batcher(flush);
  const first = b.submit(1);
  await settle();
  assert.deepEqual(batches, [[1]]);
  // Five concurrent writers arrive while the first flush is still running.
  const rest = [2, 3, 4, 5, 6].map((n) => b.submit(n));
  await settle();
  assert.deepEqual(batches, [[1]], "nothing starts while a flush runs");
  assert.deepEqual(b.queued, 5);
  releases.shift()!();
  assert.deepEqual(await first, 1);
  await settle();
  assert.deepEqual(batches, [[1], [2, 3, 4, 5, 6]]);
  releases.shift()!();
  assert.deepEqual(await Promise.all(rest), [2, 3, 4, 5, 6]);
  assert.deepEqual(b.batches, 2);
});

Deno.test("batcher: submissions of the same task go together", async () => {
  const { batches, releases, flush } = manualFlush<string>();
  const b = new Batcher(flush);
  const all = ["a", "b", "c"].map((s) => b.submit(s));
  await settle();
  assert.deepEqual(batches, [["a", "b", "c"]]);
  releases.shift()!();
  assert.deepEqual(await Promise.all(all), ["a", "b", "c"]);
});

Deno.test("batcher: each submission gets its own answer, refusals included", async () => {
  const b = new Batcher<number, number>((items) =>
    Promise.resolve(
      items.map((n): Settled<number> =>
        n % 2 ? { ok: false, error: new RangeError(`odd ${n}`) } : { ok: true, value: n }
      ),
    )
  );
  const answers = await Promise.allSettled([1, 2, 3, 4].map((n) => b.submit(n)));
  assert.deepEqual(answers.map((a) => a.status), [
    "rejected",
    "fulfilled",
    "rejected",
    "fulfilled",
  ]);
  assert.deepEqual((answers[0] as PromiseRejectedResult).reason.message, "odd 1");
  assert.deepEqual((answers[1] as PromiseFulfilledResult<number>).value, 2);
  assert.deepEqual((answers[2] as PromiseRejectedResult).reason.message, "odd 3");
});

Deno.test("batcher: a flush that throws fails exactly its own batch", async () => {
  let calls = 0;
  let release!: () => void;
  const b = new Batcher<number, number>(async (items) => {
    calls++;
    if (calls === 1) {
      await new Promise<void>((r) => release = r);
      throw new Error("disk full");
    }
    return items.map((value) => ({ ok: true, value }));
  });
  const failing = b.submit(1);
  await settle();
  const later = [2, 3].map((n) => b.submit(n));
  release();
  await assert.rejects(failing, /disk full/);
  assert.deepEqual(await Promise.all(later), [2, 3]);
  // And the batcher keeps working after the failure.
  assert.deepEqual(await b.submit(4), 4);
});

Deno.test("batcher: a flush answering the wrong number of items fails its batch", async () => {
  const b = new Batcher<number, number>(() => Promise.resolve([{ ok: true, value: 1 }]));
  const answers = await Promise.allSettled([b.submit(1), b.submit(2)]);
  assert.deepEqual(answers.map((a) => a.status), ["rejected", "rejected"]);
});

Deno.test("batcher: one flush at a time, however many submit concurrently", async () => {
  let running = 0;
  let most = 0;
  const seen: number[] = [];
  const b = new Batcher<number, number>(async (items) => {
    most = Math.max(most, ++running);
    seen.push(...items);
    await new Promise((r) => setTimeout(r, 1));
    running--;
    return items.map((value) => ({ ok: true, value }));
  });
  const submitters = Array.from({ length: 20 }, async (_, s) => {
    const got: number[] = [];
    for (let i = 0; i < 10; i++) got.push(await b.submit(s * 100 + i));
    return got;
  });
  const results = await Promise.all(submitters);
  assert.deepEqual(most, 1);
  assert.deepEqual(seen.length, 200);
  for (const [s, got] of results.entries()) {
    assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => s * 100 + i));
    // Each submitter's items were flushed in the order it submitted them.
    const order = seen.filter((n) => Math.floor(n / 100) === s);
    assert.deepEqual(order, got);
  }
  assert.ok(b.batches < 200, `200 writes took ${b.batches} flushes`);
});

Deno.test("batcher: a batch carries at most maxWeight, a heavier item goes alone", async () => {
  const { batches, releases, flush } = manualFlush<number>();
  const b = new Batcher(flush, { maxWeight: 5, weight: (n) => n });
  const blocker = b.submit(1);
  await settle();
  const rest = [2, 3, 9, 1, 1].map((n) => b.submit(n));
  for (let i = 0; i < 5; i++) {
    releases.shift()?.();
    await settle();
  }
  await blocker;
  await Promise.all(rest);
  assert.deepEqual(batches, [[1], [2, 3], [9], [1, 1]]);
});

Deno.test("batcher: with concurrency 2 a second batch starts while the first waits, in order", async () => {
  const { batches, releases, flush } = manualFlush<number>();
  const b = new Batcher(flush, { concurrency: 2 });
  const first = b.submit(1);
  await settle();
  const second = b.submit(2);
  await settle();
  assert.deepEqual(batches, [[1], [2]], "the second flush started while the first runs");
  const rest = [3, 4, 5].map((n) => b.submit(n));
  await settle();
  assert.deepEqual(batches, [[1], [2]], "no third flush while two run");
  releases.shift()!();
  assert.equal(await first, 1);
  await settle();
  assert.deepEqual(batches, [[1], [2], [3, 4, 5]]);
  releases.shift()!();
  releases.shift()!();
  assert.deepEqual(await Promise.all([second, ...rest]), [2, 3, 4, 5]);
  assert.ok(b.idle);
});
