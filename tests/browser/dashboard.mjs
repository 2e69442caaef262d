// Browser checks of Keelson's dashboard, run by tests/it/dashboard.rs against a real
// `keelson up`: node dashboard.mjs CHECK BASE_URL SHOT_DIR [ARGS...]. Prints "ok" or throws.
import { createRequire } from "node:module";
const require = createRequire(process.env.PLAYWRIGHT_CORE + "/");
const { chromium } = require("playwright-core");

const [check, base, shots, ...args] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const fail = (msg) => { throw new Error(msg); };
try {
  const context = await browser.newContext({ javaScriptEnabled: check !== "nojs" });
  const page = await context.newPage();
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  const cell = (c) => `.overview td > p:has(> a[href="/c/${c}"])`;
  if (check === "overview" || check === "nojs") {
    await page.goto(base + "/");
    const envs = await page.$$eval("table.overview thead th[scope=col]", (ths) => ths.slice(1).map((t) => t.textContent));
    if (envs.join(",") !== args[0]) fail(`environments ${envs} != ${args[0]}`);
    const apps = await page.$$eval("table.overview tbody th", (ths) => ths.map((t) => t.textContent));
    if (apps.join(",") !== args[1]) fail(`applications ${apps} != ${args[1]}`);
    const landmarks = await page.$$eval("header, nav, main", (els) => els.length);
    if (landmarks < 3) fail("landmarks missing");
    await page.screenshot({ path: `${shots}/${check}.png`, fullPage: true });
  } else if (check === "live") {
    // Waits for a cell to show `text`, with no reload.
    const [cluster, text] = args;
    await page.goto(base + "/");
    await page.waitForFunction(([sel, t]) => {
      const v = document.querySelector(sel + " i");
      return v && v.textContent.includes(t);
    }, [cell(cluster), text], { timeout: 60000 });
    if (navigations !== 1) fail(`the page reloaded (${navigations} navigations)`);
    await page.screenshot({ path: `${shots}/live.png`, fullPage: true });
  } else if (check === "held") {
    const [cluster, reason] = args;
    await page.goto(base + "/");
    await page.waitForFunction(([sel, r]) => {
      const el = document.querySelector(sel);
      return el && el.classList.contains("held") && el.querySelector(".why").textContent.includes(r);
    }, [cell(cluster), reason], { timeout: 30000 });
    await page.screenshot({ path: `${shots}/held.png`, fullPage: true });
  } else if (check === "invalid") {
    await page.goto(base + "/");
    const text = await page.textContent(".invalid");
    if (!text.includes(args[0])) fail(`invalid revision shows ${text}, not ${args[0]}`);
    await page.screenshot({ path: `${shots}/invalid.png`, fullPage: true });
  } else if (check === "cluster") {
    const [cluster, group] = args;
    await page.goto(base + "/");
    await page.click(`${cell(cluster)} a`);
    await page.waitForSelector(".groups .group");
    const groups = await page.$$eval(".groups .group h3", (hs) => hs.map((h) => h.textContent));
    if (!groups.includes(group)) fail(`groups ${groups} lack ${group}`);
    const history = await page.$$eval("table.history tbody tr", (rows) => rows.length);
    if (history < 1) fail("no history");
    await page.screenshot({ path: `${shots}/cluster.png`, fullPage: true });
  } else if (check === "keyboard") {
    // Tab through the page: every link and control is reached, in order.
    await page.goto(base + "/");
    const wanted = await page.$$eval("a[href], input, select, button", (els) => els.length);
    const seen = new Set();
    for (let i = 0; i < wanted + 5; i++) {
      await page.keyboard.press("Tab");
      const id = await page.evaluate(() => {
        const a = document.activeElement;
        return a ? a.outerHTML.slice(0, 200) : "";
      });
      seen.add(id);
    }
    const reached = await page.$$eval("a[href], input, select, button", (els) => els.map((e) => e.outerHTML.slice(0, 200)));
    const missed = reached.filter((r) => !seen.has(r));
    if (missed.length) fail(`not reached by keyboard: ${missed.join(" | ")}`);
  } else if (check === "sign-in") {
    // From another host: the sign-in form, then the overview with the token.
    await page.goto(base + "/");
    await page.screenshot({ path: `${shots}/sign-in.png`, fullPage: true });
    await page.getByLabel("API token").fill(args[0]);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForSelector("table.overview");
    if (!page.url().endsWith("/")) fail(`signed in to ${page.url()}`);
  } else {
    fail(`unknown check ${check}`);
  }
  console.log("ok");
} finally {
  await browser.close();
}
