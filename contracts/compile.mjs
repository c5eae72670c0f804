#!/usr/bin/env node
// Compiles contracts/src/*.sol with the pinned solcjs (contracts/node_modules/solc) and writes
// contracts/build/<Name>.json deterministically (sorted keys, 2-space indent, trailing newline).
//
//   node contracts/compile.mjs                  write the build files
//   node contracts/compile.mjs --check          recompile in memory; exit 1 naming every build file that differs
//   node contracts/compile.mjs --build-dir DIR  read/write DIR instead of contracts/build
//
// Compiler errors fail loudly (exit 2); warnings are printed to stderr.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const solc = require('solc');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC_DIR = path.join(HERE, 'src');
const NODE_MODULES = path.join(HERE, 'node_modules');
const CONTRACTS = ['TestToken', 'ProviderRegistry', 'JobEscrow'];
const SETTINGS = {
  evmVersion: 'cancun',
  optimizer: { enabled: true, runs: 200 },
};

function parseArgs(argv) {
  const opts = { check: false, buildDir: path.join(HERE, 'build') };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--check') opts.check = true;
    else if (arg === '--build-dir') {
      if (i + 1 >= argv.length) usage('--build-dir needs a directory');
      opts.buildDir = path.resolve(argv[++i]);
    } else if (arg.startsWith('--build-dir=')) opts.buildDir = path.resolve(arg.slice('--build-dir='.length));
    else usage(`unknown argument: ${arg}`);
  }
  return opts;
}

function usage(message) {
  console.error(`compile.mjs: ${message}\nusage: node contracts/compile.mjs [--check] [--build-dir DIR]`);
  process.exit(2);
}

// Source unit names are repository-relative ("src/X.sol", "@openzeppelin/...") so the metadata hash
// embedded in the bytecode does not depend on where the checkout lives.
function findImports(importPath) {
  if (importPath.startsWith('@openzeppelin/')) {
    const file = path.join(NODE_MODULES, importPath);
    if (existsSync(file)) return { contents: readFileSync(file, 'utf8') };
    return { error: `not found: ${file} (run npm ci --prefix contracts)` };
  }
  if (importPath.startsWith('src/')) {
    const file = path.join(HERE, importPath);
    if (existsSync(file)) return { contents: readFileSync(file, 'utf8') };
  }
  return { error: `cannot resolve import ${importPath}` };
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

function compile() {
  const sources = {};
  const files = readdirSync(SRC_DIR).filter((f) => f.endsWith('.sol')).sort();
  for (const f of files) sources[`src/${f}`] = { content: readFileSync(path.join(SRC_DIR, f), 'utf8') };
  for (const name of CONTRACTS) {
    if (!sources[`src/${name}.sol`]) throw new Error(`missing contracts/src/${name}.sol`);
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const diagnostics = output.errors || [];
  const errors = diagnostics.filter((d) => d.severity === 'error');
  for (const d of diagnostics.filter((d) => d.severity !== 'error')) console.error(d.formattedMessage || d.message);
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage || e.message);
    console.error(`compile.mjs: ${errors.length} compiler error(s)`);
    process.exit(2);
  }
  const artifacts = {};
  for (const name of CONTRACTS) {
    const unit = `src/${name}.sol`;
    const c = output.contracts?.[unit]?.[name];
    if (!c || !c.evm?.bytecode?.object) throw new Error(`no output for ${unit}:${name}`);
    const artifact = {
      contractName: name,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      compiler: { version: solc.version(), settings: SETTINGS },
      sourceSha256: createHash('sha256').update(sources[unit].content, 'utf8').digest('hex'),
    };
    artifacts[`${name}.json`] = `${JSON.stringify(sortKeys(artifact), null, 2)}\n`;
  }
  return artifacts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const artifacts = compile();
  if (opts.check) {
    const stale = [];
    for (const [file, text] of Object.entries(artifacts)) {
      const target = path.join(opts.buildDir, file);
      if (!existsSync(target) || readFileSync(target, 'utf8') !== text) stale.push(file);
    }
    if (stale.length) {
      console.error(`compile.mjs --check: out of date in ${opts.buildDir}: ${stale.join(', ')}`);
      console.error('run `node contracts/compile.mjs` and commit contracts/build/');
      process.exit(1);
    }
    console.log(`compile.mjs --check: ${Object.keys(artifacts).length} build files up to date`);
    return;
  }
  mkdirSync(opts.buildDir, { recursive: true });
  for (const [file, text] of Object.entries(artifacts)) {
    const target = path.join(opts.buildDir, file);
    const old = existsSync(target) ? readFileSync(target, 'utf8') : null;
    if (old !== text) writeFileSync(target, text);
    console.log(`${old === text ? 'unchanged' : 'wrote'} ${path.relative(process.cwd(), target) || target}`);
  }
}

main();
