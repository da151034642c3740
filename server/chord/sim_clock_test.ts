import { deepStrictEqual, rejects } from "node:assert/strict";
import { SimClock, SimDeadlockError } from "./sim_clock.ts";

Deno.test("advance fires the timers due on the way, in time order, and no others", async () => {
  const clock = new SimClock();
  const fired: string[] = [];
  clock.setTimer(() => fired.push(`b@${clock.now()}`), 200);
  clock.setTimer(() => fired.push(`a@${clock.now()}`), 100);
  clock.setTimer(() => fired.push(`c@${clock.now()}`), 300);
  await clock.advance(200);
  deepStrictEqual(fired, ["a@100", "b@200"]);
  deepStrictEqual(clock.now(), 200);
  deepStrictEqual(clock.pendingTimers, 1);
});

Deno.test("a cancelled timer never fires", async () => {
  const clock = new SimClock();
  let fired = 0;
  const id = clock.setTimer(() => fired++, 10);
  clock.clearTimer(id);
  await clock.advance(100);
  deepStrictEqual(fired, 0);
  deepStrictEqual(clock.pendingTimers, 0);
});

Deno.test("work a timer starts runs before later timers, at the time it fired", async () => {
  const clock = new SimClock();
  const seen: number[] = [];
  const sleep = (ms: number) => new Promise<void>((resolve) => clock.setTimer(resolve, ms));
  // A loop of awaited virtual sleeps, like a server's maintenance timer.
  const loop = async () => {
    for (let i = 0; i < 3; i++) {
      await sleep(50);
      seen.push(clock.now());
    }
  };
  const done = loop();
  await clock.advance(1000);
  await done;
  deepStrictEqual(seen, [50, 100, 150]);
  deepStrictEqual(clock.now(), 1000);
});

Deno.test("run stops as soon as the operation settles, and reports a deadlock", async () => {
  const clock = new SimClock();
  clock.setTimer(() => {}, 5000);
  const value = await clock.run(
    new Promise<string>((resolve) => clock.setTimer(() => resolve("ok"), 30)),
  );
  deepStrictEqual([value, clock.now()], ["ok", 30]);
  await clock.advance(5000);
  await rejects(clock.run(new Promise(() => {})), SimDeadlockError);
});

Deno.test("the clock refuses to run twice at once", async () => {
  const clock = new SimClock();
  const first = clock.advance(10);
  await rejects(clock.advance(10), RangeError);
  await first;
  await rejects(clock.advance(-1), RangeError);
});
