/**
 * Reading a conversation's message list in a browser test, the way a reader scrolls it: used on
 * the chat (`tests/e2e/long_history_test.ts`) and the read-only copy
 * (`tests/e2e/read_only_copy_test.ts`), which page the same way.
 */
import type { Page } from "puppeteer-core";

/** Where a message list and its rows are on the page. */
export interface ListSelectors {
  /** The scrolling list. */
  list: string;
  /** One message row in it. */
  row: string;
}

/** The chat's message list. */
export const CHAT_LIST: ListSelectors = {
  list: '[data-testid="messages"]',
  row: '[data-testid="message"]',
};

/**
 * Scrolls the list to its top again and again, as a reader drags it up, until the first message
 * shows; resolves the most message rows the page held meanwhile, how many pages came, and each
 * time the row at the top moved when a page came (px).
 */
export function scrollToFirst(
  page: Page,
  at: ListSelectors = CHAT_LIST,
): Promise<{ maxRows: number; pages: number; moved: number[] }> {
  return page.evaluate(async ({ list: listSel, row: rowSel }) => {
    const list = document.querySelector<HTMLElement>(listSel)!;
    const rows = () => list.querySelectorAll<HTMLElement>(rowSel);
    const allRows = () => document.querySelectorAll(rowSel).length;
    const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
    const deadline = performance.now() + 120_000;
    let maxRows = allRows();
    let pages = 0;
    const moved: number[] = [];
    while (document.querySelector('[data-testid="show-older"]')) {
      const first = rows()[0]!;
      list.scrollTop = 0;
      await frame();
      const before = first.getBoundingClientRect().top;
      // Until the page before it shows (the list's first row changes), or none is left.
      while (rows()[0] === first && document.querySelector('[data-testid="show-older"]')) {
        if (performance.now() > deadline) throw new Error(`Stuck after ${pages} pages`);
        maxRows = Math.max(maxRows, allRows());
        await frame();
      }
      maxRows = Math.max(maxRows, allRows());
      if (rows()[0] !== first) {
        pages++;
        moved.push(Math.abs(first.getBoundingClientRect().top - before));
      }
    }
    return { maxRows, pages, moved };
  }, at);
}
