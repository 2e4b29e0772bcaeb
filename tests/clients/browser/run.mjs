// Drives Debian's chromium (headless, by playwright-core) to a page:
// node run.mjs <page-url>. Prints the page's "RESULT <json>" line (or its
// error) and the browser console, for tests/client_matrix.rs.
import { chromium } from "playwright-core";

const [url] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`console.${m.type()}: ${m.text()}`));
  await page.goto(url);
  const out = page.locator("#out");
  await out.filter({ hasText: /^(RESULT|ERROR) / }).waitFor({ timeout: 60_000 });
  console.log(await out.textContent());
} finally {
  await browser.close();
}
