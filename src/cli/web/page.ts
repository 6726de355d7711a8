/**
 * The live view served at `/` by the admin endpoint: one HTML page and its script, plain DOM, no
 * framework, nothing fetched from outside the process (the package ships them as strings, so the
 * compiled build needs no asset files). The script subscribes to `/events` (server-sent events) and
 * redraws the NICs, the inverted trees (neighbor → paths → connections) and the timeline.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Chimney</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { padding: 10px 16px; background: #1d2330; color: #fff; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 16px; margin: 0; }
  #conn-state { margin-left: auto; font-size: 12px; opacity: .8; }
  #resets.some { color: #ffb3b3; font-weight: 600; }
  td.rst.some { color: #a4161a; font-weight: 600; }
  main { display: grid; grid-template-columns: minmax(0, 2fr) minmax(260px, 1fr); gap: 16px; padding: 16px; }
  section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px 12px; }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: #5a6372; margin: 0 0 8px; }
  #nics { display: flex; flex-wrap: wrap; gap: 8px; }
  .nic { border: 2px solid var(--c); border-radius: 6px; padding: 6px 10px; min-width: 140px; }
  .nic b { color: var(--c); }
  .nic.down { opacity: .55; border-style: dashed; }
  .bar { height: 6px; background: #e6e9ee; border-radius: 3px; margin-top: 4px; }
  .bar i { display: block; height: 100%; background: var(--c); border-radius: 3px; }
  .neighbor { margin: 6px 0 12px; }
  .neighbor > .label, .path > .label { font-weight: 600; }
  .path { margin: 4px 0 8px 16px; border-left: 2px solid #dde1e7; padding-left: 10px; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  td, th { padding: 2px 6px; text-align: left; white-space: nowrap; }
  th { color: #5a6372; font-weight: 500; }
  tr.conn td:first-child { border-left: 6px solid var(--c); }
  .owner { color: var(--c); font-weight: 600; }
  #timeline { list-style: none; margin: 0; padding: 0; max-height: 70vh; overflow: auto; }
  #timeline li { padding: 4px 0; border-bottom: 1px solid #eef0f3; }
  #timeline li.failover { color: #a4161a; }
  .muted { color: #7a8392; }
  #counters { font-family: ui-monospace, monospace; font-size: 12px; }
</style>
</head>
<body>
<header><h1>Chimney</h1><span id="name" class="muted"></span><span id="resets" data-in="0" data-out="0">resets 0↓ 0↑</span><span id="conn-state">connecting…</span></header>
<main>
  <div>
    <section><h2>NICs</h2><div id="nics"></div></section>
    <section style="margin-top:16px"><h2>State trees: neighbor → paths → connections</h2><div id="trees"></div></section>
  </div>
  <div>
    <section><h2>Failovers and moves</h2><ul id="timeline"></ul></section>
    <section style="margin-top:16px"><h2>Counters</h2><div id="counters"></div></section>
  </div>
</main>
<script src="/app.js"></script>
</body>
</html>
`;

export const PAGE_JS = `'use strict';
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
const colours = new Map([['host', '#6b7280']]);
function colour(owner) {
  if (!colours.has(owner)) colours.set(owner, PALETTE[(colours.size - 1) % PALETTE.length]);
  return colours.get(owner);
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'style') e.style.cssText = v;
    else if (k === 'cls') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}
function rate(bps) {
  const b = bps * 8;
  return b >= 1e6 ? (b / 1e6).toFixed(1) + ' Mbit/s' : b >= 1e3 ? (b / 1e3).toFixed(1) + ' kbit/s' : b.toFixed(0) + ' bit/s';
}
function bytes(n) {
  return n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' : n >= 1024 ? (n / 1024).toFixed(1) + ' KiB' : n + ' B';
}
function ms(x) { return x === undefined ? '' : x.toFixed(1) + ' ms'; }

function drawNics(nics) {
  const box = document.getElementById('nics');
  box.replaceChildren(...nics.map((n) => {
    const c = colour(n.id);
    const up = n.health === 'up' && n.linkUp;
    return el('div', { cls: 'nic' + (up ? '' : ' down'), style: '--c:' + c, 'data-nic': n.id, 'data-health': n.health },
      el('b', {}, n.id), ' ', el('span', { cls: 'muted' }, n.kind || ''), el('br'),
      'health ' + n.health + ', link ' + (n.linkUp ? 'up' : 'down'), el('br'),
      'load ' + n.load + ' / ' + n.capacity + (n.carriesHost ? ', carries host' : ''),
      el('div', { cls: 'bar' }, el('i', { style: 'width:' + Math.min(100, (100 * n.load) / Math.max(1, n.capacity)) + '%' })));
  }));
}

function drawTrees(trees) {
  const box = document.getElementById('trees');
  if (trees.length === 0) { box.replaceChildren(el('p', { cls: 'muted' }, 'no connections')); return; }
  box.replaceChildren(...trees.map((nb) => el('div', { cls: 'neighbor', 'data-neighbor': nb.ip },
    el('div', { cls: 'label' }, 'neighbor ' + nb.ip + ' ', el('span', { cls: 'muted' }, nb.mac)),
    ...nb.paths.map((p) => el('div', { cls: 'path', 'data-path': p.remote },
      el('div', { cls: 'label' }, 'path to ' + p.remote + ' ', el('span', { cls: 'muted' }, 'MTU ' + p.mtu + ', ' + p.conns.length + ' connections')),
      el('table', {},
        el('tr', {}, ...['local', 'remote', 'owner', 'state', 'in', 'out', 'rate in', 'rate out', 'rtx', 'rst'].map((h) => el('th', {}, h))),
        ...p.conns.map((c) => el('tr', { cls: 'conn', style: '--c:' + colour(c.owner), 'data-owner': c.owner, 'data-conn': c.local + '>' + c.remote },
          el('td', {}, c.local), el('td', {}, c.remote), el('td', { cls: 'owner' }, c.owner), el('td', {}, c.state),
          el('td', {}, bytes(c.bytesIn)), el('td', {}, bytes(c.bytesOut)),
          el('td', {}, rate(c.rateIn)), el('td', {}, rate(c.rateOut)), el('td', {}, String(c.retransmits)),
          resetCell(c.resetsIn, c.resetsOut)))))))));
}

// RSTs received (in) and sent (out): since the connection began in its row, since the start for the
// whole stack (host and NICs, as /metrics counts chimney_tcp_resets_total) in the header.
function resetCell(rin, rout) {
  return el('td', { cls: 'rst' + (rin + rout > 0 ? ' some' : ''), 'data-resets-in': rin, 'data-resets-out': rout },
    rin + '↓ ' + rout + '↑');
}

function drawResets(r) {
  const e = document.getElementById('resets');
  e.dataset.in = String(r.in);
  e.dataset.out = String(r.out);
  e.className = r.in + r.out > 0 ? 'some' : '';
  e.textContent = 'resets ' + r.in + '↓ ' + r.out + '↑';
}

function drawTimeline(items) {
  const box = document.getElementById('timeline');
  box.replaceChildren(...items.slice().reverse().map((t) => {
    const when = (t.at / 1000).toFixed(2) + ' s ';
    if (t.kind === 'failover') {
      return el('li', { cls: 'failover', 'data-kind': 'failover', 'data-nic': t.from },
        when + 'failover of ' + t.from + ' (' + t.cause + '): ' + t.connections + ' connections to ' + (t.to.join(', ') || 'none') +
        ', detected in ' + ms(t.detectMs) + ', resumed ' + ms(t.resumeMs) + ' later');
    }
    return el('li', { 'data-kind': 'move' }, when + t.move + ' ' + t.connections + ' connections ' + t.from + ' → ' + t.to.join(', ') + ' in ' + ms(t.ms));
  }));
}

function drawCounters(counters) {
  const keys = Object.keys(counters).filter((k) => counters[k] > 0).sort();
  document.getElementById('counters').replaceChildren(
    el('table', {}, ...keys.map((k) => el('tr', {}, el('td', {}, k), el('td', {}, String(counters[k]))))));
}

function apply(u) {
  const s = u.status;
  document.getElementById('name').textContent = s.name + ' ' + s.addresses.join(' ') + ', up ' + (s.uptimeMs / 1000).toFixed(0) + ' s';
  drawNics(s.nics);
  drawTrees(s.trees);
  drawTimeline(u.timeline);
  drawCounters(s.counters);
  if (u.resets) drawResets(u.resets);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

const source = new EventSource('/events');
source.onopen = () => { document.getElementById('conn-state').textContent = 'live'; };
source.onerror = () => { document.getElementById('conn-state').textContent = 'reconnecting…'; };
source.onmessage = (e) => apply(JSON.parse(e.data));
`;
