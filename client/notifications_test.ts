import { assertEquals } from "./testing/assert.ts";
import type { MessageRow } from "./history.ts";
import {
  loadNotificationSettings,
  notificationFor,
  openChatRequest,
  saveNotificationSettings,
} from "./notifications.ts";

function storage(initial: Record<string, string> = {}) {
  const m = new Map(Object.entries(initial));
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
  };
}

const latest: MessageRow = {
  id: "msg-000001",
  peer: "bob",
  sender: "bob",
  recipient: "alice",
  sentAt: 1,
  receivedAt: 2,
  text: "the door code is 4711",
  via: "p2p",
  status: "delivered",
};

Deno.test("a notification names the sender and the count, and shows text only if allowed", () => {
  assertEquals(notificationFor("bob", 1, latest, false).options.body, "New message");
  assertEquals(notificationFor("bob", 3, latest, false).options.body, "3 new messages");
  assertEquals(notificationFor("bob", 1, latest, true).options.body, "the door code is 4711");
  const own = { ...latest, sender: "alice" };
  assertEquals(notificationFor("bob", 1, own, true).options.body, "New message");
  const n = notificationFor("bob", 1, null, true);
  assertEquals(n.title, "bob");
  assertEquals(n.options.tag, "p2pchat-bob", "one notification per contact, replaced");
  assertEquals(n.options.data, { type: "p2pchat-chat", peer: "bob" });
});

Deno.test("notification settings: off unless saved on; unreadable settings are off", () => {
  assertEquals(loadNotificationSettings(storage()), { enabled: false, showText: false });
  const s = storage({ "p2pchat.notifications": "{not json" });
  assertEquals(loadNotificationSettings(s), { enabled: false, showText: false });
  saveNotificationSettings(s, { enabled: true, showText: false });
  assertEquals(loadNotificationSettings(s), { enabled: true, showText: false });
  const odd = storage({ "p2pchat.notifications": '{"enabled":"yes","showText":1}' });
  assertEquals(loadNotificationSettings(odd), { enabled: false, showText: false });
});

Deno.test("only a well-formed open-chat request with a valid username opens a chat", () => {
  assertEquals(openChatRequest({ type: "p2pchat-chat", peer: "bob" }), "bob");
  for (
    const bad of [
      null,
      "bob",
      { type: "other", peer: "bob" },
      { type: "p2pchat-chat" },
      { type: "p2pchat-chat", peer: 5 },
      { type: "p2pchat-chat", peer: "<img src=x>" },
      { type: "p2pchat-chat", peer: "" },
    ]
  ) assertEquals(openChatRequest(bad), null, JSON.stringify(bad));
});
