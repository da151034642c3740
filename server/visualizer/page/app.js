// @ts-check
/**
 * The ring page: listens to the server's picture stream (server-sent events), keeps the recent
 * pictures for the timeline scrubber, and draws the one shown with `render.js`. Selection is by
 * click, or Tab to a node and Enter (or Space); Escape clears it. Render times are published on
 * `globalThis.ringView` for the tests and shown in the footer.
 */
import { renderPanel, renderRing } from "./render.js";

/** @typedef {import("../picture.ts").RingPicture} RingPicture */

/** Pictures kept for scrubbing. */
const HISTORY = 300;

const ring = /** @type {HTMLElement} */ (document.getElementById("ring"));
const panel = /** @type {HTMLElement} */ (document.getElementById("panel"));
const status = /** @type {HTMLElement} */ (document.getElementById("status"));
const scrub = /** @type {HTMLInputElement} */ (document.getElementById("scrub"));
const liveButton = /** @type {HTMLButtonElement} */ (document.getElementById("live"));
const when = /** @type {HTMLElement} */ (document.getElementById("when"));
const perf = /** @type {HTMLElement} */ (document.getElementById("perf"));

/** @type {RingPicture[]} */
const history = [];
/** @type {{ selected: string | null }} */
const view = { selected: null };
let isFollowing = true;
let shown = -1;

/** What the tests read: the number of renders and how long they took. */
const stats = {
  renders: 0,
  lastRenderMs: 0,
  maxRenderMs: 0,
  lastNodes: 0,
  seq: 0,
  /** @type {{ nodes: number, ms: number }[]} the last 100 renders */
  recent: [],
};
/** @type {Record<string, unknown>} */ (/** @type {unknown} */ (globalThis)).ringView = stats;

/**
 * Draws history[index]; keeps keyboard focus on the same node across the redraw.
 * @param {number} index
 */
function show(index) {
  const picture = history[index];
  if (!picture) return;
  shown = index;
  const active = document.activeElement;
  const focusedId = active instanceof Element ? active.getAttribute("data-id") : null;
  const focusedSelect = active instanceof Element ? active.getAttribute("data-select") : null;
  const started = performance.now();
  ring.innerHTML = renderRing(picture, view);
  panel.innerHTML = renderPanel(picture, view);
  // Include style and layout in the measure, not only building the markup.
  void ring.getBoundingClientRect().width;
  const ms = performance.now() - started;
  stats.renders++;
  stats.lastRenderMs = ms;
  stats.maxRenderMs = Math.max(stats.maxRenderMs, ms);
  stats.lastNodes = picture.nodes.length;
  stats.seq = picture.seq;
  stats.recent.push({ nodes: picture.nodes.length, ms });
  if (stats.recent.length > 100) stats.recent.shift();
  ring.dataset.seq = String(picture.seq);
  ring.dataset.violations = String(picture.violationCount);
  perf.textContent = `${picture.nodes.length} nodes · rendered in ${ms.toFixed(1)} ms`;
  const time = picture.source === "simulation"
    ? `t = ${(picture.at / 1000).toFixed(1)} s (virtual)`
    : new Date(picture.at).toLocaleTimeString();
  when.textContent = isFollowing ? time : `${time} (${history.length - 1 - index} updates ago)`;
  scrub.max = String(history.length - 1);
  scrub.value = String(index);
  if (focusedId) {
    /** @type {HTMLElement | SVGElement | null} */ (ring.querySelector(
      `[data-id="${focusedId}"]`,
    ))?.focus({ preventScroll: true });
  } else if (focusedSelect) {
    /** @type {HTMLElement | null} */ (panel.querySelector(`[data-select="${focusedSelect}"]`))
      ?.focus({ preventScroll: true });
  }
}

/** @param {string | null} id */
function select(id) {
  view.selected = view.selected === id ? null : id;
  show(shown);
}

ring.addEventListener("click", (event) => {
  const node = event.target instanceof Element ? event.target.closest("[data-id]") : null;
  if (node && node.getAttribute("data-live") === "true") select(node.getAttribute("data-id"));
});
ring.addEventListener("keydown", (event) => {
  const node = event.target instanceof Element ? event.target.closest("[data-id]") : null;
  if (!node) return;
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    select(node.getAttribute("data-id"));
  } else if (event.key === "Escape") {
    view.selected = null;
    show(shown);
  }
});
panel.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest("[data-select]") : null;
  if (!link) return;
  event.preventDefault();
  view.selected = link.getAttribute("data-select");
  show(shown);
  /** @type {HTMLElement | SVGElement | null} */ (ring.querySelector(
    `[data-id="${view.selected}"]`,
  ))?.focus({ preventScroll: true });
});
scrub.addEventListener("input", () => {
  isFollowing = Number(scrub.value) >= history.length - 1;
  liveButton.setAttribute("aria-pressed", String(isFollowing));
  status.dataset.status = isFollowing ? "live" : "paused";
  status.textContent = isFollowing ? "live" : "paused on an earlier update";
  show(Number(scrub.value));
});
liveButton.addEventListener("click", () => {
  isFollowing = true;
  liveButton.setAttribute("aria-pressed", "true");
  status.dataset.status = "live";
  status.textContent = "live";
  show(history.length - 1);
});

const token = new URLSearchParams(location.search).get("token");
const events = new EventSource(
  `/ring/view/stream${token ? `?token=${encodeURIComponent(token)}` : ""}`,
);
events.addEventListener("open", () => {
  status.dataset.status = isFollowing ? "live" : "paused";
  status.textContent = isFollowing ? "live" : "paused on an earlier update";
});
events.addEventListener("error", () => {
  status.dataset.status = "connecting";
  status.textContent = "reconnecting…";
});
events.addEventListener("picture", (event) => {
  /** @type {RingPicture} */
  const picture = JSON.parse(/** @type {MessageEvent<string>} */ (event).data);
  history.push(picture);
  if (history.length > HISTORY) {
    history.shift();
    if (!isFollowing) shown = Math.max(0, shown - 1);
  }
  if (isFollowing) show(history.length - 1);
  else scrub.max = String(history.length - 1);
});
