// An independent (non-Rust) client of the reorg-sim simulator: ethers.js
// fetches blocks and logs over HTTP, recomputes every block hash as
// keccak256(RLP(header)), checks parent links and that logs decode as
// ERC-1155 events of their blocks, then follows newHeads and logs over a
// WebSocket subscription. Prints one JSON line with what it checked; exits 1
// on the first mismatch.
// Usage: node simulator-client.mjs HTTP_URL WS_URL
import { Interface, JsonRpcProvider, WebSocketProvider, encodeRlp, keccak256, toBeHex } from 'ethers';

const [httpUrl, wsUrl] = process.argv.slice(2);
const fail = (msg) => { console.error(`simulator-client: ${msg}`); process.exit(1); };
const erc1155 = new Interface([
  'event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value)',
  'event TransferBatch(address indexed operator, address indexed from, address indexed to, uint256[] ids, uint256[] values)',
  'event URI(string value, uint256 indexed id)',
]);
const quantity = (hex) => (BigInt(hex) === 0n ? '0x' : toBeHex(BigInt(hex)));

const http = new JsonRpcProvider(httpUrl, undefined, { staticNetwork: true, batchMaxCount: 1 });
const network = await http.getNetwork();
if (network.chainId !== 137n) fail(`chain id ${network.chainId}, expected 137`);
const head = await http.getBlockNumber();
const first = head - 30;
let previous = null;
let hashed = 0;
const hashes = new Map();
for (let n = first; n <= head; n++) {
  const raw = await http.send('eth_getBlockByNumber', [toBeHex(n), false]);
  const header = [raw.parentHash, raw.sha3Uncles, raw.miner, raw.stateRoot, raw.transactionsRoot, raw.receiptsRoot,
    raw.logsBloom, quantity(raw.difficulty), quantity(raw.number), quantity(raw.gasLimit), quantity(raw.gasUsed),
    quantity(raw.timestamp), raw.extraData, raw.mixHash, raw.nonce, quantity(raw.baseFeePerGas)];
  const computed = keccak256(encodeRlp(header));
  if (computed !== raw.hash) fail(`block ${n}: hash ${raw.hash} but keccak256(rlp(header)) = ${computed}`);
  const block = await http.getBlock(n);
  if (block.hash !== raw.hash) fail(`block ${n}: ethers sees ${block.hash}`);
  if (previous && block.parentHash !== previous.hash) fail(`block ${n}: parent ${block.parentHash} is not block ${n - 1} ${previous.hash}`);
  if (previous && block.timestamp <= previous.timestamp) fail(`block ${n}: timestamp does not advance`);
  hashes.set(n, block.hash);
  previous = block;
  hashed++;
}
const logs = await http.getLogs({ fromBlock: first, toBlock: head });
let decoded = 0;
for (const log of logs) {
  if (hashes.get(log.blockNumber) !== log.blockHash) fail(`log ${log.index} claims block ${log.blockNumber} ${log.blockHash}`);
  const event = erc1155.parseLog(log);
  if (!event) fail(`log ${log.index} of block ${log.blockNumber} is not an ERC-1155 event`);
  const receipt = await http.getTransactionReceipt(log.transactionHash);
  if (receipt.blockHash !== log.blockHash || receipt.status !== 1) fail(`receipt of ${log.transactionHash} disagrees`);
  decoded++;
}
if (decoded === 0) fail('no logs in the last 30 blocks');

// WebSocket subscriptions: newHeads (ethers' "block") and logs.
const ws = new WebSocketProvider(wsUrl, undefined, { staticNetwork: true });
const seenHeads = new Set();
let seenLogs = 0;
await ws.on('block', (n) => seenHeads.add(n));
await ws.on({ topics: [erc1155.getEvent('TransferSingle').topicHash] }, () => { seenLogs++; });
await new Promise((r) => setTimeout(r, 300));
await http.send('reorgsim_mine', ['0x3', { mints: 6 }]);
const deadline = Date.now() + 10000;
while ((seenHeads.size < 1 || seenLogs < 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
if (seenHeads.size < 1) fail('no newHeads notification after mining 3 blocks');
if (seenLogs < 1) fail('no logs notification after minting 6 tokens');
const newest = Math.max(...seenHeads);
if (newest !== head + 3) fail(`newest head seen ${newest}, expected ${head + 3}`);
await ws.destroy();
http.destroy();
console.log(JSON.stringify({ hashed, decoded, heads: [...seenHeads].sort(), logs: seenLogs }));
