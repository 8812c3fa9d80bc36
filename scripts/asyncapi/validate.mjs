#!/usr/bin/env node
// Validate an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser, the
// version pinned in package.json / package-lock.json; `npm ci` in this folder installs it, and
// scripts/test does that).
//
//   node validate.mjs FILE     a JSON or YAML AsyncAPI document
//   node validate.mjs -        the document on stdin
//
// Prints the parser's diagnostics as one JSON array on stdout, each
// {"severity", "code", "message", "path", "range"}: severity 0 error, 1 warning, 2 information,
// 3 hint (Spectral's DiagnosticSeverity); path is the JSON path of the offending node as a list;
// range is {start: {line, character}, end: ...}, zero-based, in the text given.
// Exit status: 0 when no diagnostic is an error (warnings, e.g. the default ruleset's spectral
// "recommended" rules, are reported but do not fail), 1 when one is, 2 on a usage error or when
// the document cannot be read or the parser cannot be run.

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const USAGE = 'usage: node validate.mjs FILE|-   (FILE: a JSON or YAML AsyncAPI document; -: stdin)';
const ERROR = 0; // DiagnosticSeverity.Error

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exitCode = 2;
}

async function main(args) {
  if (args.length !== 1 || args[0] === '' || (args[0].startsWith('-') && args[0] !== '-')) {
    return fail(USAGE);
  }
  const arg = args[0];
  let text;
  let source;
  try {
    if (arg === '-') {
      text = readFileSync(0, 'utf8');
    } else {
      source = resolve(arg); // lets the parser resolve relative $refs to other files
      text = readFileSync(source, 'utf8');
    }
  } catch (err) {
    return fail(`error: cannot read ${arg === '-' ? 'stdin' : arg}: ${err.message}`);
  }

  let Parser;
  try {
    ({ Parser } = await import('@asyncapi/parser'));
  } catch (err) {
    return fail(`error: @asyncapi/parser is not installed (run \`npm ci\` in ${dirname(fileURLToPath(import.meta.url))}, or scripts/test): ${err.message}`);
  }
  const parser = new Parser();
  const { diagnostics } = await parser.parse(text, source === undefined ? {} : { source });
  const out = diagnostics.map((d) => ({
    severity: d.severity,
    code: d.code,
    message: d.message,
    path: d.path,
    range: d.range,
  }));
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  process.exitCode = out.some((d) => d.severity === ERROR) ? 1 : 0;
}

main(process.argv.slice(2)).catch((err) => fail(`error: ${err && err.stack ? err.stack : err}`));
