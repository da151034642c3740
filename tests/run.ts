/**
 * The full test suite, as CI and the README run it: format, lint and type checks; the import
 * directions between components (scripts/check_imports.ts); unit and integration tests; the
 * browser end-to-end tests inside a private network namespace; then the multi-host tests, each
 * server in a namespace of its own.
 * After the static checks the server tests and the browser tests run side by side (two lanes;
 * P2P_TEST_LANES=1 runs every step in turn), each output line tagged with its step.
 * Prints one closing line "tests: N passed, N failed" and exits non-zero on any failure.
 *
 * Browser tests need root for the namespace. Without it they run directly on this machine
 * (WebRTC host candidates on the real interfaces), except under CI=true, where that is an error.
 */
import { canUseNetns, createIsolatedNamespace } from "./support/netns.ts";
import { CHROMIUM_PATH } from "./support/browser.ts";
import { removeLeftovers } from "./support/netns_cluster.ts";

const deno = Deno.execPath();
let passed = 0;
let failed = 0;
const failures: string[] = [];

/** A step that runs longer than this is killed and fails (a hang must not stall CI). */
const STEP_TIMEOUT_MS = Number(Deno.env.get("P2P_TEST_STEP_TIMEOUT_S") ?? "600") * 1000;

/**
 * How many steps run at once after the static checks: the unit, integration and multi-host tests
 * in one lane, the browser tests (in their own namespaces) in the other. 1 runs them one by one.
 */
const LANES = Number(Deno.env.get("P2P_TEST_LANES") ?? "2");
if (!Number.isInteger(LANES) || LANES < 1 || LANES > 2) {
  console.error(`P2P_TEST_LANES must be 1 or 2, got "${Deno.env.get("P2P_TEST_LANES")}"`);
  Deno.exit(2);
}

/** The process groups of the steps running now, ended if this script is told to stop. */
const running = new Set<number>();
/** Namespaces made for running steps, removed if this script is told to stop. */
const namespaces = new Set<{ remove(): Promise<void> }>();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    console.error(`\n${signal}: ending the running steps and everything they started`);
    for (const pid of running) {
      try {
        Deno.kill(-pid, "SIGKILL");
      } catch { /* the group is already gone */ }
    }
    await Promise.allSettled([...namespaces].map((ns) => ns.remove()));
    Deno.exit(130);
  });
}

/** Whether steps run side by side now: their output lines then carry the step's tag. */
let concurrent = false;
const encoder = new TextEncoder();

/** Copies a step's output to ours, line by line with `tag` while steps run side by side. */
async function relay(
  stream: ReadableStream<Uint8Array>,
  sink: typeof Deno.stdout,
  tag: string,
  keep?: (text: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let partial = "";
  for await (const chunk of stream) {
    const text = decoder.decode(chunk, { stream: true });
    keep?.(text);
    if (!concurrent) {
      await sink.write(chunk);
      continue;
    }
    const lines = (partial + text).split("\n");
    partial = lines.pop()!;
    if (lines.length) {
      await sink.write(encoder.encode(lines.map((l) => `[${tag}] ${l}\n`).join("")));
    }
  }
  if (partial) await sink.write(encoder.encode(concurrent ? `[${tag}] ${partial}\n` : partial));
}

async function step(name: string, cmd: string, args: string[], tag = name): Promise<string> {
  console.log(`\n=== ${name}: ${[cmd, ...args].join(" ")}`);
  const started = Date.now();
  // Each step runs in its own session (setsid), so that the step and every process it started
  // (servers, browsers) can be ended together. Uncoloured output, so that the summary line
  // ("ok | 3 passed | 0 failed") can be read.
  const child = new Deno.Command("setsid", {
    args: [cmd, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  running.add(child.pid);
  const killGroup = () => {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch { /* the group is already gone */ }
  };
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    console.error(
      `\n${name} did not finish within ${STEP_TIMEOUT_MS / 1000} s: killing it and everything it ` +
        `started. Rerun that step alone to see where it hangs (P2P_TEST_STEP_TIMEOUT_S sets the limit).`,
    );
    killGroup();
  }, STEP_TIMEOUT_MS);
  let out = "";
  await Promise.all([
    relay(child.stdout, Deno.stdout, tag, (text) => out += text),
    relay(child.stderr, Deno.stderr, tag),
  ]);
  const status = await child.status;
  clearTimeout(timer);
  // Anything the step left running (a server a failed test did not stop) ends with it.
  killGroup();
  running.delete(child.pid);
  const seconds = Math.round((Date.now() - started) / 1000);
  if (timedOut) {
    failed++;
    failures.push(`${name} (timed out)`);
    console.log(`=== ${name}: timed out after ${seconds} s`);
    return out;
  }
  const summary = out.match(/(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/);
  if (summary) {
    passed += Number(summary[1]);
    failed += Number(summary[2]);
  } else {
    if (status.success) passed++;
    else failed++;
  }
  if (!status.success) failures.push(name);
  console.log(`=== ${name}: ${status.success ? "passed" : "FAILED"} in ${seconds} s`);
  return out;
}

await step("format", deno, ["fmt", "--check"]);
await step("lint", deno, ["lint"]);
await step("type check", deno, ["check", "."]);
await step("import directions", deno, ["run", "--allow-read", "scripts/check_imports.ts"]);
await step("build client", deno, ["task", "build"]);

/** The `*_test.ts` files directly in `dir`, sorted. */
function testFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name.endsWith("_test.ts"))
    .map((e) => `${dir}/${e.name}`)
    .sort();
}

/** Unit tests, then the integration tests (real server processes), then the multi-host tests. */
async function serverLane(): Promise<void> {
  await step("unit tests", deno, [
    "test",
    "--allow-all",
    "shared/",
    "server/",
    "client/",
    "scripts/",
    "deploy/",
  ], "unit");
  // The integration tests (real server processes, kills and restarts) in two steps of about
  // equal size, so that each stays well inside the step time limit on a slower machine.
  const integration = testFiles("tests/integration");
  const halves = [integration.slice(0, Math.ceil(integration.length / 2))];
  halves.push(integration.slice(halves[0]!.length));
  for (const [i, files] of halves.filter((h) => h.length > 0).entries()) {
    await step(
      `integration tests ${i + 1}/2`,
      deno,
      ["test", "--allow-all", ...files],
      `integ${i + 1}`,
    );
  }
  // Multi-host tests make their own namespaces (a bridge in a hub namespace, one server per
  // namespace): they run from the root namespace and fail loudly under CI=true without root.
  await step(
    "multi-host tests in network namespaces",
    deno,
    ["test", "--allow-all", "tests/netns/"],
    "netns",
  );
}

/**
 * The browser tests, in two steps of about equal size so that each stays well inside the step
 * time limit on a slow machine; each in a private namespace of its own when root can make one.
 */
async function browserLane(): Promise<void> {
  const e2eFiles = testFiles("tests/e2e");
  const half = Math.ceil(e2eFiles.length / 2);
  const e2eGroups = [e2eFiles.slice(0, half), e2eFiles.slice(half)].filter((g) => g.length > 0);
  const isCi = Deno.env.get("CI") === "true";
  let chromiumFound = true;
  try {
    await Deno.stat(CHROMIUM_PATH);
  } catch {
    chromiumFound = false;
  }
  if (!chromiumFound) {
    const why =
      `Chromium not found at ${CHROMIUM_PATH}: install it (apt-get install -y chromium) ` +
      `or set CHROMIUM_PATH`;
    if (isCi) {
      console.error(`\nBrowser tests cannot run: ${why}`);
      failed++;
      failures.push("browser e2e (no Chromium)");
    } else console.warn(`\nSkipping browser tests: ${why}`);
    return;
  }
  const netns = await canUseNetns();
  if (netns.ok) {
    for (const [i, files] of e2eGroups.entries()) {
      const ns = await createIsolatedNamespace();
      namespaces.add(ns);
      try {
        await step(
          `browser e2e ${i + 1}/${e2eGroups.length} (in namespace ${ns.name})`,
          "ip",
          ["netns", "exec", ns.name, deno, "test", "--allow-all", ...files],
          `e2e${i + 1}`,
        );
      } finally {
        await ns.remove();
        namespaces.delete(ns);
      }
    }
  } else if (isCi) {
    console.error(
      `\nBrowser tests need a private network namespace and cannot make one: ${netns.why}. ` +
        `Run CI as root with iproute2 installed.`,
    );
    failed++;
    failures.push("browser e2e (no network namespace)");
  } else {
    // On this machine's own interfaces the browser tests share loopback ports with the
    // integration tests: they run after them, not beside them.
    console.warn(`\nNo network namespace (${netns.why}): running browser tests on this machine.`);
    for (const [i, files] of e2eGroups.entries()) {
      await step(`browser e2e ${i + 1}/${e2eGroups.length}`, deno, [
        "test",
        "--allow-all",
        ...files,
      ], `e2e${i + 1}`);
    }
  }
}

if (LANES === 2 && (await canUseNetns()).ok) {
  console.log(
    "\nThe server tests and the browser tests run side by side; lines carry the step's tag.",
  );
  concurrent = true;
  await Promise.all([serverLane(), browserLane()]);
  concurrent = false;
} else {
  await serverLane();
  await browserLane();
}
// A step killed on timeout cannot clean up after itself: remove its namespaces here.
if ((await canUseNetns()).ok) await removeLeftovers();

console.log(failures.length ? `\nFailed steps: ${failures.join(", ")}` : "\nAll steps passed.");
console.log(`tests: ${passed} passed, ${failed} failed`);
Deno.exit(failures.length || failed ? 1 : 0);
