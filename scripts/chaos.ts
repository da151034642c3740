/**
 * `deno task chaos`: a seeded fault schedule against real server processes (a 5-server ring,
 * K = 2, W = 2) while many WebSocket clients write offline messages to one another and fetch +
 * acknowledge their own. Prints progress on stderr, then per scenario: sent, acked, delivered,
 * lost, duplicates and the longest write pause; exits 1 if any acknowledged message was lost or
 * any was delivered again after its acknowledgement.
 *
 * Usage: deno task chaos [--seed N] [--scenarios a,b,…] [--clients N] [--fault-seconds N]
 *                        [--json] [--logs DIR]
 */
import { parseArgs } from "node:util";
import {
  formatResults,
  runChaos,
  SCENARIO_HELP,
  type ScenarioName,
  SCENARIOS,
} from "../tests/support/chaos.ts";

const USAGE = `Usage: deno task chaos [options]
  --seed N            schedule seed (victims, order of a rolling restart)   default: random
  --scenarios a,b,…   which scenarios, in this order                      default: all
  --clients N         WebSocket clients (users), 2–200                     default 30
  --fault-seconds N   how long each fault lasts at least, 1–120             default 10
  --json              also print the results as one JSON line at the end
  --logs DIR          keep every server's JSON log as DIR/<port>.log
Scenarios:
${SCENARIOS.map((s) => `  ${s.padEnd(16)}${SCENARIO_HELP[s]}`).join("\n")}`;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seed: { type: "string" },
    scenarios: { type: "string" },
    clients: { type: "string", default: "30" },
    "fault-seconds": { type: "string", default: "10" },
    json: { type: "boolean", default: false },
    logs: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
function whole(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) {
    console.error(`Error: --${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
    Deno.exit(2);
  }
  return n;
}
const seed = values.seed === undefined
  ? Math.floor(Math.random() * 1_000_000)
  : whole("seed", values.seed, 0, 2 ** 32 - 1);
const clients = whole("clients", values.clients, 2, 200);
const faultMs = whole("fault-seconds", values["fault-seconds"], 1, 120) * 1000;
const scenarios = (values.scenarios ?? SCENARIOS.join(",")).split(",").map((s) => s.trim())
  .filter((s) => s);
for (const s of scenarios) {
  if (!(SCENARIOS as readonly string[]).includes(s)) {
    console.error(`Error: unknown scenario "${s}"; known: ${SCENARIOS.join(", ")}`);
    Deno.exit(2);
  }
}

const t0 = Date.now();
const log = (line: string) =>
  console.error(`[chaos ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`);
// Ctrl-C or SIGTERM: stop the servers and remove their data before leaving.
const abort = new AbortController();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    log(`${signal}: stopping the servers`);
    abort.abort();
  });
}
const results = await runChaos({
  signal: abort.signal,
  seed,
  scenarios: scenarios as ScenarioName[],
  clients,
  faultMs,
  log,
  logDir: values.logs,
}).catch((err) => {
  if (!abort.signal.aborted) throw err;
  log("stopped");
  Deno.exit(130);
});
console.log(`\nchaos seed ${seed}, ${clients} clients, 5 servers (K = 2, W = 2)`);
for (const r of results) console.log(`  ${r.scenario}: ${r.faults.join("; ")}`);
console.log(formatResults(results));
const bad = results.filter((r) => r.lost > 0 || r.duplicates > 0);
for (const r of bad) {
  if (r.lost) console.log(`${r.scenario}: LOST ${r.lost}, e.g. ${r.lostIds.join(", ")}`);
  if (r.duplicates) {
    console.log(`${r.scenario}: DUPLICATES ${r.duplicates}:\n    ${r.duplicateIds.join("\n    ")}`);
  }
}
for (const r of results) {
  const errors = Object.entries(r.errors).map(([c, n]) => `${c} ×${n}`).join(", ");
  if (errors) console.log(`  ${r.scenario}: errors seen by clients (retried): ${errors}`);
  console.log(`  ${r.scenario}: longest write ${r.longestWrite}`);
}
if (values.json) console.log(JSON.stringify({ seed, results }));
console.log(
  bad.length
    ? "FAIL: acknowledged messages lost or delivered twice"
    : "OK: nothing lost, nothing twice",
);
Deno.exit(bad.length ? 1 : 0);
