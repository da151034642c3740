import { assertEquals } from "./testing/assert.ts";
import { createSimplePeerLinkFactory, type SimplePeerInstance } from "./simple_peer_link.ts";

/** A stand-in for simple-peer: the test fires its events. */
class FakePeer implements SimplePeerInstance {
  static last: FakePeer | null = null;
  bufferedAmount = 0;
  connected = false;
  destroyed = false;
  sent: string[] = [];
  #handlers = new Map<string, Array<(arg: unknown) => void>>();
  constructor(_opts: Record<string, unknown>) {
    FakePeer.last = this;
  }
  signal() {}
  send(data: string) {
    this.sent.push(data);
  }
  destroy() {
    this.destroyed = true;
  }
  on(event: string, fn: (arg: unknown) => void) {
    this.#handlers.set(event, [...(this.#handlers.get(event) ?? []), fn]);
  }
  emit(event: string, arg?: unknown) {
    for (const fn of this.#handlers.get(event) ?? []) fn(arg);
  }
}

Deno.test("a message that arrives before this end reports open is delivered right after it opens", () => {
  const events: string[] = [];
  let link: ReturnType<ReturnType<typeof createSimplePeerLinkFactory>> | null = null;
  link = createSimplePeerLinkFactory(FakePeer)({ remote: "bob", initiator: true }, {
    onSignal: () => {},
    onOpen: () => events.push(`open ${link!.isOpen}`),
    onMessage: (text) => {
      events.push(`message ${text}`);
      // An answer to it can go back at once.
      link!.send(`re: ${text}`);
    },
    onClose: () => events.push("close"),
  });
  const peer = FakePeer.last!;
  // The other end opened first and asked for something; this end is still reading its stats.
  peer.emit("data", '{"v":1,"type":"file_have"}');
  assertEquals(events, []);
  peer.connected = true;
  peer.emit("connect");
  assertEquals(events, ["open true", 'message {"v":1,"type":"file_have"}']);
  assertEquals(peer.sent, ['re: {"v":1,"type":"file_have"}']);
  peer.emit("data", "later");
  assertEquals(events.at(-1), "message later");
  link.destroy();
});
