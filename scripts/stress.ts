/**
 * Runs the whole test suite (`deno task test`, i.e. tests/run.ts) while busy loops occupy every
 * core, the way a user's or a CI machine's busy cores do. Prints the suite's closing line (one
 * per run) and exits with the status of the last failing run, or 0 when all passed.
 *
 * Usage: deno task test:stress [--runs N (default 1)] [--loops N (default: one per core)]
 *
 * The busy loops are child processes this script starts; it kills them by PID when it ends,
 * also on failure and on Ctrl-C / SIGTERM.
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "1" },
    loops: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "Usage: deno task test:stress [--runs N (default 1)] [--loops N (default: one per core)]",
  );
  Deno.exit(0);
}
const runs = Number(values.runs);
const loops = Number(values.loops ?? navigator.hardwareConcurrency ?? 2);
if (!Number.isInteger(runs) || runs < 1 || runs > 100) {
  console.error(`--runs must be a whole number from 1 to 100, got "${values.runs}"`);
  Deno.exit(2);
}
if (!Number.isInteger(loops) || loops < 1 || loops > 64) {
  console.error(`--loops must be a whole number from 1 to 64, got "${values.loops}"`);
  Deno.exit(2);
}

const deno = Deno.execPath();
const ROOT = new URL("../", import.meta.url).pathname;

/** Child processes this script started and must end: the busy loops and the running suite. */
const busy: Deno.ChildProcess[] = [];
let suite: Deno.ChildProcess | undefined;

function killByPid(child: Deno.ChildProcess | undefined, signal: Deno.Signal): void {
  if (!child) return;
  try {
    Deno.kill(child.pid, signal);
  } catch { /* already ended */ }
}

async function stopAll(): Promise<void> {
  for (const b of busy) killByPid(b, "SIGKILL");
  await Promise.all(busy.map((b) => b.status));
  busy.length = 0;
}

let interrupted = false;
const onSignal = (signal: Deno.Signal) => () => {
  if (interrupted) return;
  interrupted = true;
  console.error(`\n${signal}: stopping the suite and the busy loops`);
  // The suite ends its own steps (each a process group) when it is told to stop.
  killByPid(suite, "SIGTERM");
  stopAll().finally(() => Deno.exit(130));
};
Deno.addSignalListener("SIGINT", onSignal("SIGINT"));
Deno.addSignalListener("SIGTERM", onSignal("SIGTERM"));

/** Runs the suite once, echoing its output; returns its closing line and status. */
async function runSuite(): Promise<{ closing: string; code: number; seconds: number }> {
  const started = Date.now();
  suite = new Deno.Command(deno, {
    args: ["task", "test"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let tail = "";
  const decoder = new TextDecoder();
  for await (const chunk of suite.stdout) {
    await Deno.stdout.write(chunk);
    tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
  }
  const { code } = await suite.status;
  suite = undefined;
  const closing = tail.match(/^tests: \d+ passed, \d+ failed$/m)?.[0] ??
    `tests: no closing line (the suite exited with status ${code})`;
  return { closing, code, seconds: Math.round((Date.now() - started) / 1000) };
}

const summaries: string[] = [];
let status = 0;
try {
  for (let i = 0; i < loops; i++) {
    // A loop that never yields: one full core each, until killed.
    busy.push(
      new Deno.Command(deno, { args: ["eval", "for (;;) {}"], stdout: "null", stderr: "null" })
        .spawn(),
    );
  }
  console.log(`stress: ${loops} busy loops (PIDs ${busy.map((b) => b.pid).join(", ")})`);
  for (let run = 1; run <= runs && !interrupted; run++) {
    const { closing, code, seconds } = await runSuite();
    const summary = `stress run ${run}/${runs}: ${closing} (exit ${code}, ${seconds} s)`;
    summaries.push(summary);
    console.log(`\n${summary}`);
    if (code !== 0) status = code;
  }
} finally {
  await stopAll();
}
if (runs > 1) {
  console.log("\nstress summary:");
  for (const s of summaries) console.log(s);
}
Deno.exit(status);
