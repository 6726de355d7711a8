import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildTrees, countTrees, flattenTrees, treePaths } from '../../src/state/offload-tree.ts';
import { sampleConn, sampleNeighbor, samplePath } from './helpers.ts';

describe('offload trees', () => {
  test('buildTrees groups connections by shared path and neighbor objects', () => {
    const n1 = sampleNeighbor(1);
    const n2 = sampleNeighbor(2);
    const pa = samplePath(n1, 0x0a0000a0);
    const pb = samplePath(n1, 0x0a0000b0);
    const pc = samplePath(n2, 0x0a0000c0);
    const c1 = sampleConn(pa, 1001);
    const c2 = sampleConn(pb, 1002);
    const c3 = sampleConn(pa, 1003);
    const c4 = sampleConn(pc, 1004);
    const trees = buildTrees([c1, c2, c3, c4]);
    assert.equal(trees.length, 2);
    assert.equal(trees[0]!.neighbor, n1);
    assert.equal(trees[1]!.neighbor, n2);
    assert.deepEqual(
      trees[0]!.paths.map((p) => p.path),
      [pa, pb],
    );
    assert.deepEqual(trees[0]!.paths[0]!.conns, [c1, c3]);
    assert.deepEqual(trees[0]!.paths[1]!.conns, [c2]);
    assert.deepEqual(trees[1]!.paths[0]!.conns, [c4]);
    assert.deepEqual(countTrees(trees), { neighbors: 2, paths: 3, conns: 4 });
    assert.deepEqual(flattenTrees(trees), [c1, c3, c2, c4]);
    assert.deepEqual(treePaths(trees), [pa, pb, pc]);
  });

  test('two paths with equal contents but different objects stay apart (identity, not value)', () => {
    const n = sampleNeighbor();
    const p1 = samplePath(n);
    const p2 = samplePath(n);
    const trees = buildTrees([sampleConn(p1, 1), sampleConn(p2, 2)]);
    assert.equal(trees.length, 1);
    assert.equal(trees[0]!.paths.length, 2);
  });

  test('a connection listed twice travels once', () => {
    const p = samplePath(sampleNeighbor());
    const c = sampleConn(p);
    const trees = buildTrees([c, c, c]);
    assert.equal(countTrees(trees).conns, 1);
  });

  test('empty input gives no trees', () => {
    assert.deepEqual(buildTrees([]), []);
    assert.deepEqual(countTrees([]), { neighbors: 0, paths: 0, conns: 0 });
  });
});
