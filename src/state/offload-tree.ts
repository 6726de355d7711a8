import type { NeighborState } from './neighbor-state.ts';
import type { PathState } from './path-state.ts';
import type { TcpState } from './tcp-state.ts';

/**
 * The offload data structure: an inverted tree whose root is one neighbor (next hop), whose
 * middle level is every path through that neighbor and whose leaves are the TCP connections of
 * each path. The tree mirrors the object graph (`tcp.path === node.path`,
 * `node.path.neighbor === tree.neighbor`), so a transfer of the tree moves shared objects once,
 * however many connections hang beneath them.
 */
export interface OffloadTree {
  neighbor: NeighborState;
  paths: OffloadPathNode[];
}

export interface OffloadPathNode {
  path: PathState;
  conns: TcpState[];
}

/** Several trees travel in one transfer; the version is the codec's format version. */
export interface OffloadBatch {
  version: number;
  trees: OffloadTree[];
}

export interface TreeCounts {
  neighbors: number;
  paths: number;
  conns: number;
}

/**
 * Group connections into trees by the identity of their path and neighbor objects. Order is
 * first-seen order at every level, so the result is deterministic for a given input list.
 */
export function buildTrees(states: readonly TcpState[]): OffloadTree[] {
  const trees: OffloadTree[] = [];
  const byNeighbor = new Map<NeighborState, OffloadTree>();
  const byPath = new Map<PathState, OffloadPathNode>();
  const seen = new Set<TcpState>();
  for (const s of states) {
    // A connection listed twice must still travel once: two owners of one connection is the
    // one thing an offload must never produce.
    if (seen.has(s)) continue;
    seen.add(s);
    let node = byPath.get(s.path);
    if (node === undefined) {
      const nb = s.path.neighbor;
      let tree = byNeighbor.get(nb);
      if (tree === undefined) {
        tree = { neighbor: nb, paths: [] };
        byNeighbor.set(nb, tree);
        trees.push(tree);
      }
      node = { path: s.path, conns: [] };
      byPath.set(s.path, node);
      tree.paths.push(node);
    }
    node.conns.push(s);
  }
  return trees;
}

/** Every connection in the trees, tree by tree, path by path. */
export function flattenTrees(trees: readonly OffloadTree[]): TcpState[] {
  const out: TcpState[] = [];
  for (const t of trees) for (const p of t.paths) for (const c of p.conns) out.push(c);
  return out;
}

/** Every path object in the trees. */
export function treePaths(trees: readonly OffloadTree[]): PathState[] {
  const out: PathState[] = [];
  for (const t of trees) for (const p of t.paths) out.push(p.path);
  return out;
}

export function countTrees(trees: readonly OffloadTree[]): TreeCounts {
  let paths = 0;
  let conns = 0;
  for (const t of trees) {
    paths += t.paths.length;
    for (const p of t.paths) conns += p.conns.length;
  }
  return { neighbors: trees.length, paths, conns };
}
