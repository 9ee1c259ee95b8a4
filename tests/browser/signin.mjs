// Drives the dashboard's sign-in in Debian's Chromium for the Rust test
// `dashboard_signs_in_and_shows_only_what_the_role_may_do`
// (crates/etcd-monitor/tests/security.rs).
// Arguments: URL, viewer token, admin token, cluster name, screenshot path.
// Prints one line per milestone; the test asserts them.
import { chromium } from "playwright-core";

const [url, viewer, admin, cluster, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const visible = (page, sel) => page.evaluate((s) => [...document.querySelectorAll(s)].filter((e) => e.offsetParent !== null).length, sel);
async function signIn(page, token) {
  await page.waitForFunction(() => document.querySelector("#signin").open, null, { timeout: 20000 });
  await page.fill("#token", token);
  await Promise.all([page.waitForNavigation(), page.click("#signin-form button[type=submit]")]);
  await page.waitForFunction(() => document.querySelector("#whoami").dataset.role, null, { timeout: 20000 });
}
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => console.log(`PAGE ERROR ${e.message}`));
  page.on("dialog", (d) => d.accept(cluster));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector("#signin").open, null, { timeout: 20000 });
  console.log("SIGNIN ASKED");
  // A wrong token is refused in the dialog.
  await page.fill("#token", "emt_wrong");
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0, null, { timeout: 10000 });
  console.log(`WRONG TOKEN ${await page.textContent("#signin-error")}`);

  await page.fill("#token", viewer);
  await Promise.all([page.waitForNavigation(), page.click("#signin-form button[type=submit]")]);
  await page.waitForFunction(() => document.querySelectorAll("#members tbody tr[data-member]").length > 0, null, { timeout: 30000 });
  await page.waitForFunction(() => document.querySelector("#live").classList.contains("on"), null, { timeout: 20000 });
  console.log(`VIEWER who=${await page.textContent("#whoami")} actions=${await visible(page, "[data-action]")} bench=${await visible(page, "#bench-form")} audit=${await visible(page, "#audit-card")} live=on`);
  await page.screenshot({ path: shot.replace(/\.png$/, "-viewer.png"), fullPage: true });

  await Promise.all([page.waitForNavigation(), page.click("#signout")]);
  await signIn(page, admin);
  await page.waitForFunction(() => document.querySelectorAll("#audit tbody tr").length > 0, null, { timeout: 20000 });
  console.log(`ADMIN who=${await page.textContent("#whoami")} actions=${await visible(page, "[data-action]")} bench=${await visible(page, "#bench-form")} audit=${await visible(page, "#audit-card")}`);
  await page.click("[data-action=alarm-disarm]");
  await page.waitForFunction(() => /done|failed/.test(document.querySelector("#maintenance-result").textContent), null, { timeout: 20000 });
  console.log(`DISARM ${await page.textContent("#maintenance-result")}`);
  await page.waitForFunction(() => [...document.querySelectorAll("#audit tbody td")].some((td) => td.textContent.includes("alarm-disarm")), null, { timeout: 20000 });
  console.log("AUDIT SHOWS DISARM");
  await page.screenshot({ path: shot, fullPage: true });
} finally {
  await browser.close();
}
process.exit(0);
