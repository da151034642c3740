/**
 * The scrolling of a conversation's message list, shared by the chat and the read-only copy: the
 * list holds a window of the conversation (at most `MESSAGE_WINDOW` rows, message_window.ts),
 * whatever its length; scrolling near its top or bottom reads the next page by keyset and drops
 * as many rows at the other end, keeping the row the reader looks at where it was on screen.
 */
import type { ReadonlySignal } from "@preact/signals";
import type { RefObject } from "preact";
import { useEffect, useLayoutEffect, useRef } from "preact/hooks";
import type { MessageRow } from "../history.ts";

/** A conversation shown a window at a time, and its paging (the chat's, the copy's). */
export interface PagedMessages {
  messages: ReadonlySignal<MessageRow[]>;
  hasOlder: ReadonlySignal<boolean>;
  hasNewer: ReadonlySignal<boolean>;
  showOlder(): boolean;
  showNewer(): boolean;
  showNewest(): void;
  /** The reader is at the newest message (new ones move the window along), or is not. */
  follow(following: boolean): void;
}

/** Where a row of the list is: its message id and its top edge on screen, px. */
interface Anchor {
  id: string;
  top: number;
}

/** The first message row at least partly in view in `list` (rows are in order: bisected). */
function firstInView(list: HTMLElement): Anchor | null {
  const rows = list.querySelectorAll<HTMLElement>("[data-id]");
  const top = list.getBoundingClientRect().top;
  let lo = 0;
  let hi = rows.length - 1;
  let found: HTMLElement | null = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const box = rows[mid]!.getBoundingClientRect();
    if (box.bottom > top) {
      found = rows[mid]!;
      hi = mid - 1;
    } else lo = mid + 1;
  }
  return found ? { id: found.dataset.id!, top: found.getBoundingClientRect().top } : null;
}

/** Distance within which the reader counts as at the end of the list, px. */
const AT_BOTTOM_PX = 40;
/** How close to an end of the shown part the next page is read, px. */
const PAGE_AHEAD_PX = 600;

/** What {@link useMessageList} gives the list it drives. */
export interface MessageList {
  listRef: RefObject<HTMLOListElement | null>;
  olderRef: RefObject<HTMLButtonElement | null>;
  newerRef: RefObject<HTMLButtonElement | null>;
  /** Whether the view follows the newest message (the reader is at the end). */
  following: { current: boolean };
  /** The list's scroll handler. */
  onScroll(): void;
  /** Brings the reader back to the newest message. */
  toNewest(): void;
}

/**
 * Drives the list of `paged` (message rows carry `data-id`) for the conversation `peer`: it
 * starts at the newest message and follows new ones while the reader is at the end; a reader
 * who scrolled up is not pulled down (except by their own new message, `isOwnNew`), and the row
 * they look at stays put as pages come and go. Nearing either end reads the next page by itself
 * (its button stays for keyboards). `endChanges`: what else at the end of the list should bring
 * a following view down when it changes.
 */
export function useMessageList(
  paged: PagedMessages,
  peer: string | null,
  options: { isOwnNew?: boolean; endChanges?: unknown[] } = {},
): MessageList {
  const messages = paged.messages.value;
  const hasOlder = paged.hasOlder.value;
  const hasNewer = paged.hasNewer.value;
  const listRef = useRef<HTMLOListElement>(null);
  const olderRef = useRef<HTMLButtonElement>(null);
  const newerRef = useRef<HTMLButtonElement>(null);
  // Whether the view follows the newest message (the reader is at the end of the conversation,
  // as of their last scroll): new messages then come into view; a reader who scrolled up is not
  // pulled down (except by their own message).
  const following = useRef(true);
  // Where the row the reader looks at was before this render: put back after it (rows added or
  // dropped above it, a page read and the other end's dropped), unless the view follows.
  const anchor = useRef<Anchor | null>(null);
  const list = listRef.current;
  anchor.current = list && !following.current ? firstInView(list) : null;
  const last = messages.at(-1);

  useLayoutEffect(() => {
    following.current = true;
    paged.follow(true);
  }, [peer]);

  // After every render: the view stays at the end while it follows (an older page read above
  // it: a short first page on a tall screen), else the row the reader looked at goes back where
  // it was on screen.
  const shownFirst = useRef<string | undefined>(undefined);
  useLayoutEffect(() => {
    const el = listRef.current;
    const was = anchor.current;
    anchor.current = null;
    const isFirstChanged = shownFirst.current !== messages[0]?.id;
    shownFirst.current = messages[0]?.id;
    if (el && following.current && isFirstChanged) el.scrollTop = el.scrollHeight;
    if (!el || !was || following.current) return;
    const row = el.querySelector(`[data-id="${CSS.escape(was.id)}"]`);
    if (!row) return;
    const moved = row.getBoundingClientRect().top - was.top;
    if (Math.abs(moved) >= 1) el.scrollTop += moved;
  });

  // At the end of the conversation, the view follows new messages (and one's own, always).
  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (following.current || (options.isOwnNew && !hasNewer)) {
      el.scrollTop = el.scrollHeight;
      following.current = true;
      paged.follow(true);
    }
  }, [last?.id, peer, ...(options.endChanges ?? [])]);

  // Nearing the top or the bottom of the shown part reads the next page by itself (the buttons
  // stay for keyboards). Observed anew whenever the shown part changes, as each observation
  // starts with a report of where the button is.
  useEffect(() => {
    const root = listRef.current;
    if (!root || typeof IntersectionObserver === "undefined") return;
    const seen = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (!e.isIntersecting) continue;
        if (e.target === olderRef.current) paged.showOlder();
        else if (e.target === newerRef.current) paged.showNewer();
      }
    }, { root, rootMargin: `${PAGE_AHEAD_PX}px 0px` });
    if (olderRef.current) seen.observe(olderRef.current);
    if (newerRef.current) seen.observe(newerRef.current);
    return () => seen.disconnect();
  }, [peer, hasOlder, hasNewer, messages[0]?.id, last?.id]);

  /** Reads where the reader is: at the end (following new messages) or not. */
  const onScroll = () => {
    const el = listRef.current;
    if (!el) return;
    following.current = el.scrollHeight - el.scrollTop - el.clientHeight < AT_BOTTOM_PX &&
      !paged.hasNewer.peek();
    paged.follow(following.current);
  };

  /** Back to the newest message. */
  const toNewest = () => {
    following.current = true;
    if (paged.hasNewer.peek()) paged.showNewest();
    else paged.follow(true);
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  };

  return { listRef, olderRef, newerRef, following, onScroll, toNewest };
}

/** "Show older messages" at the top of the list, or "Show newer messages" at its bottom. */
export function PageButton(
  { list, paged, newer = false }: { list: MessageList; paged: PagedMessages; newer?: boolean },
) {
  return (
    <li class="older">
      <button
        type="button"
        class="link"
        ref={newer ? list.newerRef : list.olderRef}
        data-testid={newer ? "show-newer" : "show-older"}
        onClick={() => newer ? paged.showNewer() : paged.showOlder()}
      >
        {newer ? "Show newer messages" : "Show older messages"}
      </button>
    </li>
  );
}
