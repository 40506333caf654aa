// A wallet back-end's everyday calls through livechain, with ethers v6: reads over HTTP, a
// transaction signed here and sent, and new blocks over WebSocket.
//
//   LIVECHAIN_URL=http://127.0.0.1:8545/ethereum/YOUR_KEY \
//   LIVECHAIN_WS=ws://127.0.0.1:8545/ethereum/YOUR_KEY \
//   PRIVATE_KEY=0x... node examples/ethers.mjs
//
// Prints one JSON line with what it saw. tests/examples.rs runs it against anvil.
import { JsonRpcProvider, WebSocketProvider, Wallet } from 'ethers';

const url = process.env.LIVECHAIN_URL ?? 'http://127.0.0.1:8545/ethereum';
const wsUrl = process.env.LIVECHAIN_WS ?? url.replace(/^http/, 'ws');

// ethers batches calls made in the same tick into one JSON-RPC batch by default.
const provider = new JsonRpcProvider(url);
const wallet = new Wallet(process.env.PRIVATE_KEY, provider);
const [network, blockNumber, balance, nonce] = await Promise.all([
  provider.getNetwork(),
  provider.getBlockNumber(),
  provider.getBalance(wallet.address),
  provider.getTransactionCount(wallet.address),
]);

// Signed here; livechain forwards the raw transaction and keeps it if no upstream takes it.
const tx = await wallet.sendTransaction({
  to: '0x000000000000000000000000000000000000dEaD',
  value: 1000n,
});
const receipt = await tx.wait(1, 30_000);

const ws = new WebSocketProvider(wsUrl);
const head = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no new block in 30 s')), 30_000);
  ws.once('block', (n) => { clearTimeout(timer); resolve(n); });
});
await ws.destroy();

console.log(JSON.stringify({
  client: 'ethers',
  chainId: Number(network.chainId),
  blockNumber,
  balance: balance.toString(),
  nonce,
  hash: tx.hash,
  status: receipt.status === 1 ? 'success' : 'reverted',
  newHead: head,
}));
process.exit(0);
