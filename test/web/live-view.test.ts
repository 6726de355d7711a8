import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { startWebDemo, type WebDemo } from '../../src/cli/web-demo.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const CONNECTIONS = 6;
const present = existsSync(CHROMIUM);
if (!present && process.env.CI) throw new Error(`${CHROMIUM} is missing: .ci/run installs Debian's chromium`);

async function metrics(url: string) {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

/** Owners of the connection rows on the page. */
const owners = (page: Page) =>
  page.$$eval('tr.conn', (rows) => rows.map((r) => r.getAttribute('data-owner') ?? ''));

/** Wait until the page shows exactly `n` connection rows, each owned by one of `owners`. */
const rowsOwnedBy = (page: Page, n: number, owners: string[]) =>
  page.waitForFunction(
    `(() => {
      const rows = [...document.querySelectorAll('tr.conn')];
      const ok = ${JSON.stringify(owners)};
      return rows.length === ${n} && rows.every((r) => ok.includes(r.getAttribute('data-owner')));
    })()`,
    undefined,
    { timeout: 20_000 },
  );

describe('live view in headless Chromium', {
  skip: present ? false : `no ${CHROMIUM} (apt-get install chromium)`,
}, () => {
  let demo: WebDemo;
  let browser: Browser;
  before(async () => {
    demo = await startWebDemo({
      port: 0,
      connections: CONNECTIONS,
      nics: 2,
      seed: 11,
      bytesPerSecond: 32 * 1024,
      cutEveryMs: 0,
      pushMs: 200,
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  after(async () => {
    await browser?.close();
    await demo?.close();
  });

  test('rows appear, a failover shows in the timeline and moves them, /metrics counts it once', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(demo.url);
    const nicIds = demo.team.nics.map((n) => n.id);
    // Every connection is on the page, run by one of the NICs.
    await rowsOwnedBy(page, CONNECTIONS, nicIds);
    const before = await metrics(demo.url);
    const failoversBefore = sumOf(before, 'chimney_failovers_total');
    assert.equal(await page.locator('#timeline li[data-kind="failover"]').count(), 0);

    // Read before the cut: a push after it may already show the connections moved.
    const shown = await owners(page);
    const cutId = demo.cut();
    const onCut = shown.filter((o) => o === cutId).length;
    assert.ok(onCut > 0, `the busiest NIC ${cutId} runs connections before the cut`);
    const other = nicIds.find((id) => id !== cutId)!;

    await page
      .locator(`#timeline li[data-kind="failover"][data-nic="${cutId}"]`)
      .waitFor({ timeout: 20_000 });
    await rowsOwnedBy(page, CONNECTIONS, [other]);
    const text = await page.locator(`#timeline li[data-kind="failover"]`).first().textContent();
    assert.match(text ?? '', /detected in [\d.]+ ms, resumed [\d.]+ ms later/);
    assert.equal(
      await page.locator(`.nic[data-nic="${cutId}"].down`).count(),
      1,
      'the cut NIC shows as down',
    );

    const afterCut = await metrics(demo.url);
    assert.equal(sumOf(afterCut, 'chimney_failovers_total'), failoversBefore + 1);
    assert.equal(sumOf(afterCut, 'chimney_failovers_total', { nic: cutId, cause: 'carrier' }), 1);
    assert.equal(sumOf(afterCut, 'chimney_failover_detect_seconds_count'), 1);
    assert.equal(sumOf(afterCut, 'chimney_connections', { owner: other }), CONNECTIONS);
    assert.equal(sumOf(afterCut, 'chimney_connections', { owner: cutId }), 0);
    assert.ok(sumOf(afterCut, 'chimney_moves_total', { kind: 'move' }) >= onCut);
    assert.equal(sumOf(afterCut, 'chimney_nic_up', { nic: cutId }), 0);
    assert.equal(sumOf(afterCut, 'chimney_nic_up', { nic: other }), 1);
    assert.ok(afterCut.has('process_cpu_user_seconds_total'), "Node's default process metrics");
    // Counters only go up across the failover.
    for (const name of ['chimney_tcp_bytes_total', 'chimney_tcp_retransmits_total', 'chimney_moves_total'])
      assert.ok(sumOf(afterCut, name) >= sumOf(before, name), `${name} went backwards`);

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'live-view.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
    await page.close();
  });

  test('resets show: per connection, and in total as /metrics counts them', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(demo.url);
    await page.waitForFunction('Number(document.body.dataset.updates || 0) > 0', undefined, {
      timeout: 20_000,
    });
    const cells = await page.locator('tr.conn td.rst').count();
    assert.equal(cells, await page.locator('tr.conn').count(), 'every connection row has a reset cell');
    assert.ok(cells > 0, 'connection rows are shown');
    const shownIn = async () => Number(await page.locator('#resets').getAttribute('data-in'));
    const before = await shownIn();
    assert.equal(before, sumOf(await metrics(demo.url), 'chimney_tcp_resets_total', { direction: 'in' }));
    // A client gives up on a connection: the team's end receives its RST.
    assert.ok(demo.reset(0), 'the first client connection was open');
    await page.waitForFunction(
      `Number(document.getElementById('resets').dataset.in) > ${before}`,
      undefined,
      { timeout: 20_000 },
    );
    const shown = await shownIn();
    assert.match((await page.locator('#resets').textContent()) ?? '', new RegExp(`resets ${shown}↓ \\d+↑`));
    assert.equal(await page.locator('#resets.some').count(), 1, 'a reset is marked as such');
    assert.ok(
      sumOf(await metrics(demo.url), 'chimney_tcp_resets_total', { direction: 'in' }) >= shown,
      'the page shows what /metrics counts',
    );
    await page.close();
  });
});
