// Drives the dashboard in headless Chromium (playwright-core, the system's /usr/bin/chromium).
// Usage: node dashboard.cjs ADMIN_URL REVISION SCREENSHOT
// Protocol with the Rust test on stdin/stdout: prints "shown" once the revision is on the page,
// waits for "load" (requests are then held on it), prints "moved" when the page's in-flight or
// queued count for it went above 0; then "bad" (a broken manifest was written): prints
// "rejected" once the page shows the rejected reload with its located error; then "restart"
// (the gateway is killed and started again):
// prints "stale" when the page says it is not live, "live" when it is live again. Exits 1 with
// the reason on any failure or console error.
const { chromium } = require("playwright-core");
const readline = require("readline");

const [admin, revision, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const next = () => new Promise((resolve) => lines.once("line", resolve));
const say = (word) => process.stdout.write(word + "\n");

async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("timed out waiting for " + what);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(admin + "/");
    const card = `[data-revision="${revision}"]`;
    await page.waitForSelector(card, { timeout: 20000 });
    if ((await page.textContent("#status")) !== "live") {
      await until("the page to be live", async () => (await page.textContent("#status")) === "live");
    }
    say("shown");
    await next(); // "load"
    const count = async (field) => Number(await page.textContent(`${card} [data-field="${field}"]`));
    await until("in flight or queued to move", async () => (await count("in_flight")) + (await count("queued")) > 0);
    // The charts drew the requests: the in-flight or queued line is not flat at 0.
    await page.screenshot({ path: screenshot, fullPage: true });
    if (errors.length) throw new Error("console errors: " + errors.join(" | "));
    say("moved");
    await next(); // "bad": a manifest with an error was written
    await until("the rejected reload and its located error", async () => {
      const text = await page.textContent("#manifests");
      return text.includes("rejected") && /bad\.yaml \(document 0\) \S+: /.test(text);
    });
    say("rejected");
    await next(); // "restart"
    await until("the page to say it is not live", async () =>
      (await page.evaluate(() => document.body.classList.contains("stale"))) &&
      (await page.textContent("#stale-note")).startsWith("not live"));
    say("stale");
    await until("the page to be live again", async () => (await page.textContent("#status")) === "live", 30000);
    say("live");
    // While the gateway was down the stream's requests failed; those errors are the browser's
    // report of the outage, not the page's. Anything else is a failure.
    const own = errors.filter((e) => !/api\/v1\/stream|ERR_CONNECTION_REFUSED|ERR_INCOMPLETE_CHUNKED_ENCODING|net::ERR_/.test(e));
    if (own.length) throw new Error("console errors: " + own.join(" | "));
  } finally {
    await browser.close();
  }
  process.exit(0);
})().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.exit(1);
});
