// The package in headless Chromium: a page imports the bundle, subscribes,
// shows events, and resumes by itself after its connection is cut.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { newTopic } from "./support/clients.js";
import { Proxy } from "./support/proxy.js";
import { API_KEY, Server } from "./support/server.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];

const server = new Server();
let proxy;
let pages;
let browser;

/** Serves the test page and the bundle, from another origin than the broker's. */
async function servePages() {
  const files = {
    "/": ["text/html", await readFile(new URL("./support/page.html", import.meta.url))],
    "/ringcast-client.js": [
      "text/javascript",
      await readFile(new URL("../dist/ringcast-client.js", import.meta.url)),
    ],
  };
  const pageServer = http.createServer((request, response) => {
    const file = files[new URL(request.url, "http://x").pathname];
    response.writeHead(file ? 200 : 404, { "content-type": file ? file[0] : "text/plain" });
    response.end(file ? file[1] : "not found");
  });
  await new Promise((resolve) => pageServer.listen(0, "127.0.0.1", resolve));
  return pageServer;
}

before(async () => {
  await server.start();
  proxy = await new Proxy(server.port).start();
  pages = await servePages();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
});
after(async () => {
  await browser?.close();
  pages?.close();
  await proxy?.close();
  await server.stop();
});

test("a page subscribes, shows events, and resumes without a gap after its connection is cut", async () => {
  const topic = newTopic("browser");
  await server.createTopic(topic);
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
  const query = new URLSearchParams({ ws: proxy.ws, topic, key: API_KEY });
  await page.goto(`http://127.0.0.1:${pages.address().port}/?${query}`);
  const events = () => page.$$eval("#events li", (items) => items.map((item) => item.textContent));
  await page.waitForFunction(() => document.getElementById("recoveries").textContent.trim() === "true");
  assert.equal(await page.textContent("#state"), "connected");

  for (let n = 1; n <= 3; n += 1) {
    await server.publish(topic, { n, text: "<b>ü</b>" });
  }
  await page.waitForFunction(() => document.querySelectorAll("#events li").length === 3);
  proxy.cut();
  for (let n = 4; n <= 6; n += 1) {
    await server.publish(topic, { n, text: "<b>ü</b>" });
  }
  await page.waitForFunction(() => document.getElementById("recoveries").textContent.trim() === "true true");
  await page.waitForFunction(() => document.querySelectorAll("#events li").length === 6);
  assert.deepEqual(
    await events(),
    [1, 2, 3, 4, 5, 6].map((n) => `${n} ${JSON.stringify({ n, text: "<b>ü</b>" })}`),
  );
  assert.equal(await page.textContent("#state"), "connected");
  // The cut connection shows in the console as a failed WebSocket; nothing else may.
  assert.deepEqual(problems.filter((problem) => !problem.includes("WebSocket")), []);
  await page.close();
});
