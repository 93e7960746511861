import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseRuleDefinitions } from "../actors/rules.js";

export const projectRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const defaultRulesFile = join(projectRoot, "config", "default-rules.yaml");

/** The rule definitions of a rules file (the default one if none), validated. */
export function loadRules(file: string | undefined): Record<string, unknown>[] {
  const path = file ?? defaultRulesFile;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read rules file ${path}: ${(e as Error).message}`);
  }
  try {
    return parseRuleDefinitions(text);
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
}

/**
 * Loads aggregation plugins: modules that call `registerAggregation` when imported (README,
 * "Writing an aggregation"). They must load before any rule that names their aggregates.
 */
export async function loadPlugins(files: string[] | undefined): Promise<void> {
  for (const file of files ?? []) {
    try {
      await import(pathToFileURL(resolve(file)).href);
    } catch (e) {
      throw new UsageError(`cannot load plugin ${file}: ${(e as Error).message}`);
    }
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
