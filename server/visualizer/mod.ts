/**
 * The live ring visualizer: a page at `/ring/view` that draws the CHORD ring as an SVG circle
 * (nodes at the angle of their id, successor and predecessor arrows, a selected node's fingers,
 * key range and replica set, per-node record counts), lists the invariant violations the ring's
 * own checker finds, and keeps a timeline of joins, leaves, crashes, merges and repairs. The
 * server that serves the page gathers every live server's state itself (signed requests) and
 * streams whole pictures over server-sent events; the browser talks to no other server. The
 * same page shows the in-process simulation (`deno task ring:sim`). It reads the ring; it never
 * changes it, and it shows counts, never usernames or contents.
 */
export {
  MAX_EVENTS,
  MAX_VIOLATIONS,
  type NodeInput,
  PictureBuilder,
  type PictureBuilderOptions,
  type PictureNode,
  type PictureViolation,
  positionOf,
  type RecordCounts,
  type RingEvent,
  type RingEventKind,
  type RingPicture,
} from "./picture.ts";
export {
  type NodeEvent,
  NodeEvents,
  type NodeReport,
  parseNodeReport,
  parseReportRequest,
  reportState,
  RING_REPORT_PATH,
  type RingReportRequest,
} from "./report.ts";
export { PictureHub, type PictureSource } from "./source.ts";
export { RingGatherer, type RingGathererDeps, type RingGathererOptions } from "./gatherer.ts";
export {
  createVisualizerHandler,
  VIEW_PATH,
  type VisualizerHttpDeps,
  type VisualizerHttpOptions,
} from "./http.ts";
export {
  type ClusterVisualizer,
  type ClusterVisualizerDeps,
  type ClusterVisualizerOptions,
  createClusterVisualizer,
} from "./cluster_visualizer.ts";
