import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseRules, type MetricRule } from "../actors/rules.js";

export const projectRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const defaultRulesFile = join(projectRoot, "config", "default-rules.yaml");

export function loadRules(file: string | undefined): MetricRule[] {
  const path = file ?? defaultRulesFile;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read rules file ${path}: ${(e as Error).message}`);
  }
  try {
    return parseRules(text);
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
}

export function parsePort(text: string | undefined, fallback: number, name: string): number {
  if (text === undefined) return fallback;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--${name} must be a port number, not ${text}`);
  return port;
}

/** A mistake of the user's: printed without a stack, exit code 2. */
export class UsageError extends Error {}
