// @ts-check
/**
 * Pure rendering of a ring picture to markup strings: the SVG ring ({@link renderRing}) and the
 * side panel ({@link renderPanel}). No DOM access, so the same code runs in the page and in the
 * unit tests (`render_test.ts`). Plain JavaScript checked by `deno check` through JSDoc types,
 * served as is: the page needs no build step.
 */

/** @typedef {import("../picture.ts").RingPicture} RingPicture */
/** @typedef {import("../picture.ts").PictureNode} PictureNode */

/** Radius of the ring in SVG units (the view box leaves room around it for labels). */
export const RADIUS = 100;

/**
 * What is selected and shown.
 * @typedef {{ selected: string | null }} ViewState
 */

/**
 * Escapes text for HTML and SVG markup.
 * @param {unknown} text
 * @returns {string}
 */
export function escapeXml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The point of position `pos` (0 at the top, clockwise) on a circle of radius `r`.
 * @param {number} pos
 * @param {number} r
 * @returns {[number, number]}
 */
export function pointAt(pos, r) {
  const angle = pos * 2 * Math.PI - Math.PI / 2;
  return [round(r * Math.cos(angle)), round(r * Math.sin(angle))];
}

/**
 * The node at index `i` of `nodes` (indexes in a picture always point into its table).
 * @param {PictureNode[]} nodes
 * @param {number} i
 * @returns {PictureNode}
 */
function nodeAt(nodes, i) {
  const node = nodes[i];
  if (!node) throw new RangeError(`Cannot draw node ${i}: the picture has ${nodes.length} nodes`);
  return node;
}

/**
 * Attributes of a line from (x1, y1) to (x2, y2) shortened by `trim` at both ends, so an arrow
 * head ends at the edge of the node dot instead of under it.
 * @param {number} x1
 * @param {number} y1
 * @param {number} x2
 * @param {number} y2
 * @param {number} trim
 */
function lineBetween(x1, y1, x2, y2, trim) {
  const length = Math.hypot(x2 - x1, y2 - y1);
  const t = length > 3 * trim ? trim / length : 0;
  const dx = (x2 - x1) * t;
  const dy = (y2 - y1) * t;
  return `x1="${round(x1 + dx)}" y1="${round(y1 + dy)}" x2="${round(x2 - dx)}" y2="${
    round(y2 - dy)
  }"`;
}

/** @param {number} x */
function round(x) {
  return Math.round(x * 100) / 100;
}

/**
 * A short readable name of a node: the first hex digits of its id and its address.
 * @param {PictureNode} node
 */
export function nodeName(node) {
  return `${node.id.slice(0, 8)} ${node.address.replace(/^[a-z]+:\/\//, "")}`;
}

/**
 * For each node index, the rules it violates.
 * @param {RingPicture} picture
 * @returns {Map<number, string[]>}
 */
export function violationsByNode(picture) {
  /** @type {Map<number, string[]>} */
  const by = new Map();
  for (const v of picture.violations) {
    for (const i of v.nodes) {
      const rules = by.get(i) ?? [];
      if (!rules.includes(v.rule)) rules.push(v.rule);
      by.set(i, rules);
    }
  }
  return by;
}

/**
 * An SVG arc along the ring from position `from` to `to` (clockwise) at radius `r`.
 * @param {number} from
 * @param {number} to
 * @param {number} r
 */
function arcPath(from, to, r) {
  let span = to - from;
  if (span <= 0) span += 1;
  const [x1, y1] = pointAt(from, r);
  if (span >= 0.999) {
    const [xm, ym] = pointAt(from + 0.5, r);
    return `M${x1} ${y1}A${r} ${r} 0 1 1 ${xm} ${ym}A${r} ${r} 0 1 1 ${x1} ${y1}`;
  }
  const [x2, y2] = pointAt(to, r);
  return `M${x1} ${y1}A${r} ${r} 0 ${span > 0.5 ? 1 : 0} 1 ${x2} ${y2}`;
}

/**
 * The ring as SVG markup: every node at the angle of its id, successor arrows (outside chords),
 * predecessor arrows (dashed, inside), and for the selected node its key range, fingers and
 * replica set. Nodes are focusable buttons carrying their id, address and successor as data.
 * @param {RingPicture} picture
 * @param {ViewState} view
 * @returns {string}
 */
export function renderRing(picture, view) {
  const nodes = picture.nodes;
  const n = nodes.length;
  const isSmall = n <= 48;
  const dot = n <= 16 ? 4.5 : Math.max(1.2, Math.min(4, 200 / n));
  const arrows = n <= 128;
  const bad = violationsByNode(picture);
  const selected = view.selected === null ? -1 : nodes.findIndex((x) => x.id === view.selected);
  /** @type {string[]} */
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="-150 -140 300 280" class="ring" role="group" aria-label="CHORD ring of ${n} nodes">`,
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="context-stroke"/></marker></defs>`,
    `<circle class="track" r="${RADIUS}" cx="0" cy="0" fill="none"/>`,
  );
  const sel = selected >= 0 ? nodes[selected] : undefined;
  if (sel) {
    // The keys the selected node owns: (predecessor, itself].
    const pred = sel.pred !== null ? nodes[sel.pred] : undefined;
    const from = pred ? pred.pos : nodes[(selected - 1 + n) % n]?.pos ?? sel.pos;
    out.push(`<path class="range" d="${arcPath(from, sel.pos, RADIUS + 9)}" fill="none"/>`);
  }
  const marker = arrows ? ` marker-end="url(#arrow)"` : "";
  /** @type {string[]} */
  const succLines = [];
  /** @type {string[]} */
  const predLines = [];
  nodes.forEach((node, i) => {
    if (!node.live || !node.member) return;
    const s = node.succ[0];
    if (s !== undefined && s !== i) {
      const [x1, y1] = pointAt(node.pos, RADIUS);
      const [x2, y2] = pointAt(nodeAt(nodes, s).pos, RADIUS);
      const wrong = bad.get(i)?.includes("wrong_successor") ? " wrong" : "";
      succLines.push(
        `<line class="succ${wrong}" ${lineBetween(x1, y1, x2, y2, dot + 0.5)}${marker}/>`,
      );
    }
    if (node.pred !== null && node.pred !== i && arrows) {
      const [x1, y1] = pointAt(node.pos, RADIUS - 7);
      const [x2, y2] = pointAt(nodeAt(nodes, node.pred).pos, RADIUS - 7);
      predLines.push(
        `<line class="pred" ${lineBetween(x1, y1, x2, y2, dot * 0.6)}${marker}/>`,
      );
    }
  });
  out.push(
    `<g class="preds">${predLines.join("")}</g>`,
    `<g class="succs">${succLines.join("")}</g>`,
  );
  if (sel) {
    const [x1, y1] = pointAt(sel.pos, RADIUS);
    for (const f of sel.fingers) {
      if (f === selected) continue;
      const [x2, y2] = pointAt(nodeAt(nodes, f).pos, RADIUS);
      out.push(`<line class="finger" ${lineBetween(x1, y1, x2, y2, dot + 0.5)}${marker}/>`);
    }
  }
  const replicaOf = new Set(sel ? sel.replicas : []);
  const succOf = new Set(sel ? sel.succ : []);
  nodes.forEach((node, i) => {
    const [x, y] = pointAt(node.pos, RADIUS);
    const rules = bad.get(i);
    const classes = ["node"];
    if (!node.live) classes.push("ghost");
    else if (!node.member) classes.push("outside");
    if (rules) classes.push("violation");
    if (i === selected) classes.push("selected");
    if (replicaOf.has(i) && i !== selected) classes.push("replica");
    else if (succOf.has(i) && i !== selected) classes.push("in-succ-list");
    const succ = node.succ[0] !== undefined ? nodes[node.succ[0]] : undefined;
    const label = `${node.live ? "" : "unreachable "}node ${nodeName(node)}` +
      (succ ? `, successor ${succ.id.slice(0, 8)}` : "") +
      (rules ? `, violates ${rules.join(", ")}` : "");
    out.push(
      `<g class="${classes.join(" ")}" data-id="${node.id}" data-address="${
        escapeXml(node.address)
      }" data-succ="${
        succ ? escapeXml(succ.address) : ""
      }" data-live="${node.live}" data-pos="${node.pos}"${
        node.live ? ` tabindex="0" role="button" aria-pressed="${i === selected}"` : ""
      } aria-label="${escapeXml(label)}">`,
      `<circle cx="${x}" cy="${y}" r="${i === selected ? dot * 1.6 : dot}"/>`,
      rules ? `<circle class="halo" cx="${x}" cy="${y}" r="${dot + 3}" fill="none"/>` : "",
      `<title>${escapeXml(label)}</title>`,
    );
    if (isSmall || i === selected) {
      const [lx, ly] = pointAt(node.pos, RADIUS + 12);
      const anchor = lx > 4 ? "start" : lx < -4 ? "end" : "middle";
      out.push(
        `<text x="${lx}" y="${ly}" text-anchor="${anchor}" dominant-baseline="middle">${
          escapeXml(node.id.slice(0, 4))
        }${rules ? " !" : ""}</text>`,
      );
    }
    out.push(`</g>`);
  });
  const members = nodes.filter((x) => x.live && x.member).length;
  out.push(
    `<text class="centre" x="0" y="-6" text-anchor="middle">${members} live member${
      members === 1 ? "" : "s"
    }</text>`,
    `<text class="centre ${
      picture.violationCount ? "bad" : "ok"
    }" x="0" y="8" text-anchor="middle">${
      picture.violationCount
        ? `${picture.violationCount} violation${picture.violationCount === 1 ? "" : "s"}`
        : "invariants hold"
    }</text>`,
    `</svg>`,
  );
  return out.join("");
}

/**
 * The side panel: the selected node's details, the violations, the timeline.
 * @param {RingPicture} picture
 * @param {ViewState} view
 * @returns {string}
 */
export function renderPanel(picture, view) {
  const nodes = picture.nodes;
  const sel = nodes.find((x) => x.id === view.selected);
  /** @type {string[]} */
  const out = [];
  out.push(`<section class="details" aria-live="polite"><h2>Node</h2>`);
  if (!sel) {
    out.push(`<p class="hint">Select a node (click, or Tab to it and press Enter).</p>`);
  } else {
    /** @param {number} i */
    const ref = (i) =>
      `<a class="ref" href="#" role="button" data-select="${nodeAt(nodes, i).id}">${
        escapeXml(nodeName(nodeAt(nodes, i)))
      }</a>`;
    const pred = sel.pred !== null ? nodes[sel.pred] : undefined;
    const c = sel.counts;
    out.push(
      `<dl>`,
      `<dt>Id</dt><dd class="mono">${sel.id}</dd>`,
      `<dt>Address</dt><dd>${escapeXml(sel.address)}</dd>`,
      `<dt>State</dt><dd>${
        sel.live ? (sel.member ? "member" : "not a member") : "unreachable"
      }</dd>`,
      `<dt>Key range</dt><dd class="mono">(${pred ? pred.id.slice(0, 10) : "?"}, ${
        sel.id.slice(0, 10)
      }]</dd>`,
      `<dt>Predecessor</dt><dd>${sel.pred !== null ? ref(sel.pred) : "unknown"}</dd>`,
      `<dt>Successors</dt><dd><ol>${sel.succ.map((i) => `<li>${ref(i)}</li>`).join("")}</ol></dd>`,
      `<dt>Replicas (K + 1 = ${picture.replicas + 1})</dt><dd><ol>${
        sel.replicas.map((i) => `<li>${ref(i)}</li>`).join("")
      }</ol></dd>`,
      `<dt>Fingers (${sel.fingers.length} distinct)</dt><dd><ol>${
        sel.fingers.map((i) => `<li>${ref(i)}</li>`).join("")
      }</ol></dd>`,
      `<dt>Records</dt><dd>${
        c ? `${c.accounts} accounts · ${c.presence} presence · ${c.mailbox} mailbox` : "—"
      }</dd>`,
      `</dl>`,
    );
  }
  out.push(`</section>`);
  out.push(
    `<section class="violations"><h2>Violations (${picture.violationCount})</h2>`,
  );
  if (picture.violationCount === 0) {
    out.push(`<p class="ok">All of Zave's invariants hold.</p>`);
  } else {
    out.push(`<ul>`);
    for (const v of picture.violations.slice(0, 100)) {
      const first = v.nodes[0];
      out.push(
        `<li data-rule="${v.rule}"><strong>${v.rule}</strong> ${escapeXml(v.message)}${
          first !== undefined
            ? ` <a class="ref" href="#" role="button" data-select="${
              nodeAt(nodes, first).id
            }">show</a>`
            : ""
        }</li>`,
      );
    }
    if (picture.violationCount > 100) out.push(`<li>… ${picture.violationCount - 100} more</li>`);
    out.push(`</ul>`);
  }
  out.push(`</section>`);
  if (picture.unreachable.length > 0) {
    out.push(
      `<section><h2>Unreachable</h2><p>${
        picture.unreachable.map(escapeXml).join(", ")
      }</p></section>`,
    );
  }
  out.push(`<section class="timeline"><h2>Timeline</h2><ol>`);
  const base = picture.source === "simulation" ? 0 : undefined;
  for (const e of [...picture.events].reverse().slice(0, 60)) {
    const when = base === 0
      ? `${(e.at / 1000).toFixed(1)} s`
      : new Date(e.at).toISOString().slice(11, 19);
    out.push(
      `<li class="ev-${e.kind}"><time>${when}</time> <strong>${e.kind}</strong> ${
        e.node ? `<span class="mono">${escapeXml(e.node)}</span> ` : ""
      }${escapeXml(e.detail)}</li>`,
    );
  }
  out.push(`</ol></section>`);
  return out.join("");
}
