// Drives the dashboard in Debian's Chromium for the Rust test
// `dashboard_shows_members_and_a_kill_without_reload` (crates/etcd-monitor/tests/api.rs).
// Protocol on stdout/stdin: prints "SEEN 3 MEMBERS", "WINDOW <the fsync chart's window>",
// "ACTIVITY <charts with data>/<charts> <ids of those without>", "DEFRAG <the autopilot and its first run>",
// "HOT <the busiest writer's row>",
// waits for "KILLED",
// prints "SEEN DOWN after N ms", "PHONE OVERFLOW true|false", "EXTERNAL n".
import { chromium } from "playwright-core";
import readline from "node:readline";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const external = [];
  await page.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === "127.0.0.1" || u.hostname === "localhost") return route.continue();
    external.push(u.href);
    return route.abort();
  });
  page.on("pageerror", (e) => console.log(`PAGE ERROR ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(
    () => document.querySelectorAll("#members tbody tr[data-member]").length === 3 &&
      document.querySelectorAll("#members tbody tr[data-state=leader]").length === 1,
    null, { timeout: 30000 });
  console.log("SEEN 3 MEMBERS");
  await page.waitForFunction(() => /^\d+ (min|s)$/.test(document.querySelector("#metrics-window").textContent), null, { timeout: 30000 });
  console.log(`WINDOW ${await page.textContent("#metrics-window")}`);
  // The activity charts load when their section opens; every one draws a line
  // once the history has points (rates after two scrapes).
  await page.click("#activity summary");
  const empty = () => page.evaluate(() => [...document.querySelectorAll("#activity-charts svg")]
    .filter((svg) => !svg.querySelector("polyline")).map((svg) => svg.id));
  const t1 = Date.now();
  let left = await empty();
  while (left.length && Date.now() - t1 < 30000) { await page.waitForTimeout(500); left = await empty(); }
  const total = await page.evaluate(() => document.querySelectorAll("#activity-charts svg").length);
  console.log(`ACTIVITY ${total - left.length}/${total} ${left.join(" ")}`.trim());
  // The defrag autopilot's settings and its first run (every member skipped).
  await page.waitForFunction(() => document.querySelector('#defrag-runs li[data-outcome="skipped"]'), null, { timeout: 30000 });
  console.log(`DEFRAG ${await page.textContent("#defrag-autopilot")} ${await page.textContent("#defrag-runs li")}`);
  // The Keyspace card's hot writers: the test writes to /registry/events/.
  await page.click("#keyspace-hot-button");
  await page.waitForFunction(() => document.querySelector('#keyspace-hot tbody tr[data-prefix="/registry/events/"]'), null, { timeout: 30000 });
  const first = await page.evaluate(() => [...document.querySelector("#keyspace-hot tbody tr").cells].map((c) => c.textContent));
  console.log(`HOT ${first.join(" ")}`);
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) { if (line.trim() === "KILLED") break; }
  rl.close();
  process.stdin.destroy();
  const t0 = Date.now();
  await page.waitForFunction(() => document.querySelectorAll("#members tbody tr[data-state=down]").length === 1, null, { timeout: 30000 });
  console.log(`SEEN DOWN after ${Date.now() - t0} ms`);
  await page.screenshot({ path: shot, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  console.log(`PHONE OVERFLOW ${overflow}`);
  await page.screenshot({ path: shot.replace(/\.png$/, "-phone.png"), fullPage: true });
  console.log(`EXTERNAL ${external.length} ${external.join(" ")}`);
} finally {
  await browser.close();
}
process.exit(0);
