/**
 * The full test suite, as CI and the README run it: format, lint and type checks; the import
 * directions between components (scripts/check_imports.ts); unit and integration tests; the
 * browser end-to-end tests inside a private network namespace; then the multi-host tests, each
 * server in a namespace of its own.
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

/** The process group of the step running now, ended if this script is told to stop. */
let running: number | undefined;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    console.error(`\n${signal}: ending the running step and everything it started`);
    if (running !== undefined) {
      try {
        Deno.kill(-running, "SIGKILL");
      } catch { /* the group is already gone */ }
    }
    Deno.exit(130);
  });
}

async function step(name: string, cmd: string, args: string[]): Promise<string> {
  console.log(`\n=== ${name}: ${[cmd, ...args].join(" ")}`);
  // Each step runs in its own session (setsid), so that the step and every process it started
  // (servers, browsers) can be ended together. Uncoloured output, so that the summary line
  // ("ok | 3 passed | 0 failed") can be read.
  const child = new Deno.Command("setsid", {
    args: [cmd, ...args],
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1" },
  }).spawn();
  running = child.pid;
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
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    const text = decoder.decode(chunk);
    out += text;
    await Deno.stdout.write(chunk);
  }
  const status = await child.status;
  clearTimeout(timer);
  // Anything the step left running (a server a failed test did not stop) ends with it.
  killGroup();
  running = undefined;
  if (timedOut) {
    failed++;
    failures.push(`${name} (timed out)`);
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
  return out;
}

await step("format", deno, ["fmt", "--check"]);
await step("lint", deno, ["lint"]);
await step("type check", deno, ["check", "."]);
await step("import directions", deno, ["run", "--allow-read", "scripts/check_imports.ts"]);
await step("build client", deno, ["task", "build"]);
await step("unit and integration tests", deno, [
  "test",
  "--allow-all",
  "shared/",
  "server/",
  "client/",
  "scripts/",
  "deploy/",
  "tests/integration/",
]);

// The browser tests run in two steps of about equal size, so that each stays well inside the
// step time limit on a slow machine.
const e2eFiles = [...Deno.readDirSync("tests/e2e")]
  .filter((e) => e.isFile && e.name.endsWith("_test.ts"))
  .map((e) => `tests/e2e/${e.name}`)
  .sort();
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
  const why = `Chromium not found at ${CHROMIUM_PATH}: install it (apt-get install -y chromium) ` +
    `or set CHROMIUM_PATH`;
  if (isCi) {
    console.error(`\nBrowser tests cannot run: ${why}`);
    failed++;
    failures.push("browser e2e (no Chromium)");
  } else console.warn(`\nSkipping browser tests: ${why}`);
} else {
  const netns = await canUseNetns();
  if (netns.ok) {
    for (const [i, files] of e2eGroups.entries()) {
      const ns = await createIsolatedNamespace();
      try {
        await step(`browser e2e ${i + 1}/${e2eGroups.length} (in namespace ${ns.name})`, "ip", [
          "netns",
          "exec",
          ns.name,
          deno,
          "test",
          "--allow-all",
          ...files,
        ]);
      } finally {
        await ns.remove();
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
    console.warn(`\nNo network namespace (${netns.why}): running browser tests on this machine.`);
    for (const [i, files] of e2eGroups.entries()) {
      await step(`browser e2e ${i + 1}/${e2eGroups.length}`, deno, [
        "test",
        "--allow-all",
        ...files,
      ]);
    }
  }
}

// Multi-host tests make their own namespaces (a bridge in a hub namespace, one server per
// namespace): they run from the root namespace and fail loudly under CI=true without root.
await step("multi-host tests in network namespaces", deno, ["test", "--allow-all", "tests/netns/"]);
// A step killed on timeout cannot clean up after itself: remove its namespaces here.
if ((await canUseNetns()).ok) await removeLeftovers();

console.log(failures.length ? `\nFailed steps: ${failures.join(", ")}` : "\nAll steps passed.");
console.log(`tests: ${passed} passed, ${failed} failed`);
Deno.exit(failures.length || failed ? 1 : 0);
