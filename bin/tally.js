#!/usr/bin/env node
// The CLI is TypeScript compiled into dist/ (npm install runs the build through "prepare").
import { existsSync } from "node:fs";
const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  console.error("tally is not built yet: run `npm install` (or `make build`) in the project folder");
  process.exit(2);
}
await import(main.href);
