/**
 * The shown part of one conversation: a window of at most {@link MESSAGE_WINDOW} messages, read
 * by keyset pages ({@link History.page}) so that it costs the same at 100 and 100,000 messages.
 * The logged-in chat ({@link UserSession}) and the read-only copy kept after a hand-over
 * (chat_model.ts) each have one; the chat view renders either through `useMessageList`.
 */
import { batch, signal } from "@preact/signals";
import type { History, MessageKey, MessageRow } from "./history.ts";

/** Messages shown at first in a conversation, and read by each "show older" or "show newer". */
export const MESSAGE_PAGE = 50;

/**
 * Most messages the open conversation holds at once (the chat renders them all): paging further
 * drops as many from the other end, so the page holds the same few rows at 100 and 100,000
 * messages of history.
 */
export const MESSAGE_WINDOW = 150;

/** Where the window reads its pages: {@link History.page}. */
export type PageSource = Pick<History, "page">;

/** Whether the shown part has messages beyond either end. */
export interface WindowEnds {
  hasOlder: boolean;
  hasNewer: boolean;
}

/** A part of a conversation ready to show (see {@link MessageWindow.around}). */
export interface WindowPart extends WindowEnds {
  rows: MessageRow[];
}

/** See the module comment. */
export class MessageWindow {
  /** The shown part, ordered by send time then id. */
  readonly messages = signal<MessageRow[]>([]);
  /** Whether the conversation has messages older than those in {@link messages}. */
  readonly hasOlder = signal(false);
  /** Whether the conversation has messages newer than those in {@link messages}. */
  readonly hasNewer = signal(false);
  /**
   * Whether the view follows the newest message (the reader is at the bottom): new messages
   * then move the window along; otherwise the window stays where the reader is.
   */
  following = true;
  #source: PageSource;
  #onShow: (peer: string | null, rows: MessageRow[]) => void;

  /**
   * `source` reads the pages; `onShow` runs in the same batch as each change of the shown part
   * (the chat folds the operations of the rows shown there).
   */
  constructor(source: PageSource, onShow: (peer: string | null, rows: MessageRow[]) => void) {
    this.#source = source;
    this.#onShow = onShow;
  }

  /** Forgets the shown part: the next {@link refresh} reads the newest page, following it. */
  reset(): void {
    batch(() => {
      this.messages.value = [];
      this.hasNewer.value = false;
      this.following = true;
    });
  }

  /**
   * Reads the shown part of the conversation with `peer` again (a message stored, changed or
   * hidden): from its first message on, by keyset. At the end of the conversation, new messages
   * join it; past {@link MESSAGE_WINDOW}, a reader who follows the newest gets the newest page,
   * one who reads older ones keeps what they read (the rest waits for {@link showNewer}). Shown
   * nothing yet, the newest page.
   */
  refresh(peer: string | null): void {
    if (!peer) {
      this.show(null, { rows: [], hasOlder: false, hasNewer: false });
      return;
    }
    const source = this.#source;
    const shown = this.messages.value;
    const first = shown[0];
    if (!first) {
      const rows = source.page(peer, "before", null, MESSAGE_PAGE + 1);
      this.show(peer, {
        rows: rows.slice(-MESSAGE_PAGE),
        hasOlder: rows.length > MESSAGE_PAGE,
        hasNewer: false,
      });
      return;
    }
    let rows = source.page(peer, "from", keyOf(first), MESSAGE_WINDOW + 1);
    let hasOlder = this.hasOlder.value;
    let hasNewer = this.hasNewer.value;
    if (hasNewer) {
      // Reading older messages: the same stretch, whatever arrived after it.
      const last = keyOf(shown.at(-1)!);
      rows = rows.filter((r) => compareKeys(r, last) <= 0);
    } else if (rows.length > MESSAGE_WINDOW && this.following) {
      rows = source.page(peer, "before", null, MESSAGE_PAGE);
      hasOlder = true;
    } else if (rows.length > MESSAGE_WINDOW) {
      rows = rows.slice(0, MESSAGE_WINDOW);
      hasNewer = true;
    }
    if (rows.length === 0) {
      // Everything shown was deleted on this device: the newest page again.
      this.messages.value = [];
      return this.refresh(peer);
    }
    this.show(peer, { rows, hasOlder, hasNewer });
  }

  /**
   * Shows a page of older messages of the conversation with `peer` (the reader scrolled to the
   * top), dropping as many newer ones past {@link MESSAGE_WINDOW}; false if none is older.
   */
  showOlder(peer: string): boolean {
    const shown = this.messages.value;
    if (!this.hasOlder.value || shown.length === 0) return false;
    const older = this.#source.page(peer, "before", keyOf(shown[0]!), MESSAGE_PAGE);
    const rows = [...older, ...shown];
    this.show(peer, {
      rows: rows.slice(0, MESSAGE_WINDOW),
      hasOlder: older.length === MESSAGE_PAGE && this.#hasBefore(peer, older[0]!),
      hasNewer: this.hasNewer.value || rows.length > MESSAGE_WINDOW,
    });
    return older.length > 0;
  }

  /**
   * Shows a page of newer messages (the reader scrolled down to the end of an older part),
   * dropping as many older ones past {@link MESSAGE_WINDOW}; false if the newest is shown.
   */
  showNewer(peer: string): boolean {
    const shown = this.messages.value;
    if (!this.hasNewer.value || shown.length === 0) return false;
    const newer = this.#source.page(peer, "after", keyOf(shown.at(-1)!), MESSAGE_PAGE + 1);
    const more = newer.length > MESSAGE_PAGE;
    const rows = [...shown, ...newer.slice(0, MESSAGE_PAGE)];
    this.show(peer, {
      rows: rows.slice(-MESSAGE_WINDOW),
      hasOlder: this.hasOlder.value || rows.length > MESSAGE_WINDOW,
      hasNewer: more,
    });
    return newer.length > 0;
  }

  /** Shows the newest page again (the reader jumps back to the end). */
  showNewest(peer: string): void {
    batch(() => {
      this.reset();
      this.refresh(peer);
    });
  }

  /**
   * Half a page either side of `row` of the conversation with `peer`, read by keyset (as fast
   * for the first of 100,000); null if `row` is not shown there (an operation, or deleted on this
   * device). Show it with {@link show}.
   */
  around(peer: string, row: MessageRow): WindowPart | null {
    const half = MESSAGE_PAGE / 2;
    const from = this.#source.page(peer, "from", keyOf(row), half + 1);
    if (from[0]?.id !== row.id) return null;
    const before = this.#source.page(peer, "before", keyOf(row), half);
    return {
      rows: [...before, ...from.slice(0, half)],
      hasOlder: before.length === half && this.#hasBefore(peer, before[0]!),
      hasNewer: from.length > half,
    };
  }

  /** Shows `part` of the conversation with `peer` (null: none). */
  show(peer: string | null, part: WindowPart): void {
    batch(() => {
      this.hasOlder.value = part.hasOlder;
      this.hasNewer.value = part.hasNewer;
      this.messages.value = part.rows;
      this.#onShow(peer, part.rows);
    });
  }

  /** Whether the conversation with `peer` has a shown message older than `row`. */
  #hasBefore(peer: string, row: MessageRow): boolean {
    return this.#source.page(peer, "before", keyOf(row), 1).length > 0;
  }
}

/** A row's place in its conversation. */
export function keyOf(row: MessageRow): MessageKey {
  return { sentAt: row.sentAt, id: row.id };
}

/** Orders two places in a conversation (send time, then id). */
export function compareKeys(a: MessageKey, b: MessageKey): number {
  return a.sentAt - b.sentAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
