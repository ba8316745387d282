// Compiles tests/contracts/MarketplaceItems.sol with solc (npm) and writes the
// creation bytecode to tests/contracts/MarketplaceItems.bin.
// Regenerate with: node crates/reorg-sim/tests/node/compile-contract.mjs
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'contracts');
const source = readFileSync(join(dir, 'MarketplaceItems.sol'), 'utf8');
const input = {
  language: 'Solidity',
  sources: { 'MarketplaceItems.sol': { content: source } },
  settings: { optimizer: { enabled: true, runs: 200 }, outputSelection: { '*': { '*': ['evm.bytecode.object'] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join('\n'));
  process.exit(1);
}
const bin = output.contracts['MarketplaceItems.sol'].MarketplaceItems.evm.bytecode.object;
writeFileSync(join(dir, 'MarketplaceItems.bin'), bin + '\n');
console.log(`wrote ${bin.length / 2} bytes of bytecode (solc ${solc.version()})`);
