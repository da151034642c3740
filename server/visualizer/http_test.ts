import { equal, ok, throws } from "node:assert/strict";
import { createVisualizerHandler } from "./http.ts";
import { PictureBuilder } from "./picture.ts";
import { NodeEvents, parseNodeReport } from "./report.ts";
import { PictureHub } from "./source.ts";

const TOKEN = "operator-token-0123456789";

Deno.test("with an operator token, the page and its stream need it; script and style do not", async () => {
  const hub = new PictureHub();
  const handle = createVisualizerHandler({ source: hub }, { operatorToken: TOKEN });
  const status = async (path: string, headers: HeadersInit = {}) => {
    const res = (await handle(new Request(`http://x${path}`, { headers })))!;
    await res.body?.cancel();
    return res.status;
  };
  equal(await status("/ring/view"), 401);
  equal(await status("/ring/view/stream"), 401);
  equal(await status("/ring/view?token=wrong-token-0123456789"), 401);
  equal(await status(`/ring/view?token=${TOKEN}`), 200);
  equal(await status("/ring/view", { "x-operator-token": TOKEN }), 200);
  equal(await status("/ring/view/stream", { authorization: `Bearer ${TOKEN}` }), 200);
  equal(await status("/ring/view/app.js"), 200);
  equal(await status("/ring/view/style.css"), 200);
  equal(await handle(new Request("http://x/ring")), undefined);
  hub.close();
});

Deno.test("the stream starts with the latest picture and ends when the source closes", async () => {
  const hub = new PictureHub();
  hub.publish(new PictureBuilder().update(0, []));
  const res = (await createVisualizerHandler({ source: hub })(
    new Request("http://x/ring/view/stream"),
  ))!;
  equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("event: picture")) text += (await reader.read()).value;
  hub.close();
  while (!(await reader.read()).done) { /* drain until closed */ }
  ok(text.includes('"seq":1'));
});

Deno.test("a node report is validated: a bad event kind or field is refused", () => {
  const events = new NodeEvents(() => 7);
  events.tee(() => {})("ring_joined", { through: "http://a" });
  const good = {
    v: 1,
    type: "ring_report",
    bits: 8,
    view: {
      self: { id: "0a", address: "n10" },
      isMember: true,
      predecessor: null,
      successors: [{ id: "0a", address: "n10" }],
      fingers: [null],
    },
    counts: { accounts: 1, presence: 0, mailbox: 2 },
    events: events.recent(),
    repaired: 0,
  };
  equal(parseNodeReport(JSON.stringify(good)).events[0]?.kind, "join");
  throws(() =>
    parseNodeReport(JSON.stringify({ ...good, events: [{ ...good.events[0], kind: "x" }] }))
  );
  throws(() => parseNodeReport(JSON.stringify({ ...good, counts: { accounts: -1 } })));
  throws(() => parseNodeReport(JSON.stringify({ ...good, v: 2 })));
});
