/**
 * Notifications of new messages while the app is hidden. They are off until the user turns them
 * on in the settings (the browser asks for permission then, in answer to that click, never at
 * page load), and they say who wrote and how many messages — the text only if the user allowed
 * it, since a notification shows on a locked screen. One notification per contact, replaced by
 * the next (`tag`); clicking it opens that conversation (see sw.ts).
 */
import type { MessageRow } from "./history.ts";
import type { TabStorage } from "./session.ts";
import { isValidUsername } from "../shared/username.ts";

/** What the user chose. */
export interface NotificationSettings {
  /** Notify of new messages while the app is hidden. */
  enabled: boolean;
  /** Put the message text in the notification. */
  showText: boolean;
}

const KEY = "p2pchat.notifications";

/** The saved settings (both off if none, or unreadable). */
export function loadNotificationSettings(storage: TabStorage): NotificationSettings {
  try {
    const v = JSON.parse(storage.getItem(KEY) ?? "{}") as Partial<NotificationSettings>;
    return { enabled: v.enabled === true, showText: v.showText === true };
  } catch {
    return { enabled: false, showText: false };
  }
}

export function saveNotificationSettings(storage: TabStorage, s: NotificationSettings): void {
  storage.setItem(KEY, JSON.stringify(s));
}

/** The data a notification carries, read back when it is clicked. */
export interface NotificationData {
  type: "p2pchat-chat";
  peer: string;
}

/** Title and options of the notification for `count` new messages from `from`. */
export function notificationFor(
  from: string,
  count: number,
  latest: MessageRow | null,
  showText: boolean,
): { title: string; options: NotificationOptions & { data: NotificationData } } {
  const body = showText && latest && latest.sender === from
    ? latest.text.slice(0, 200)
    : count === 1
    ? "New message"
    : `${count} new messages`;
  return {
    title: from,
    options: {
      body,
      tag: `p2pchat-${from}`,
      icon: "icon-192.png",
      data: { type: "p2pchat-chat", peer: from },
    },
  };
}

/** Whether the object a service worker posted is a request to open `peer`'s conversation. */
export function openChatRequest(value: unknown): string | null {
  if (typeof value !== "object" || value === null) return null;
  const v = value as Partial<NotificationData>;
  return v.type === "p2pchat-chat" && typeof v.peer === "string" && isValidUsername(v.peer)
    ? v.peer
    : null;
}
