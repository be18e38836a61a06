// The one style spec shared with the Python renderers: attn_widgets/style.json (colour
// stops, label rules, edge buckets, sizes), bundled into each view by esbuild (named
// imports, so a view carries only the sections it reads). The views read their constants
// from here, never their own copies; tests/contract checks that both sides compute the
// same colours and label choices from it.
import { colormap, diverging, edges, generation, labels, nodes, route, sizes, traced } from "../../attn_widgets/style.json";

export const COLORMAP = colormap;
export const LABELS = labels;
export const EDGES = edges;
export const TRACED = traced;
export const NODES = nodes;
export const SIZES = sizes;
export const DIVERGING = diverging;
export const ROUTE = route;
export const GENERATION = generation;
