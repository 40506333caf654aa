// A wallet back-end's everyday calls through livechain, with viem: reads over HTTP (batched
// into one JSON-RPC batch), a transaction signed here and sent, and new blocks over WebSocket.
//
//   LIVECHAIN_URL=http://127.0.0.1:8545/ethereum/YOUR_KEY \
//   LIVECHAIN_WS=ws://127.0.0.1:8545/ethereum/YOUR_KEY \
//   PRIVATE_KEY=0x... node examples/viem.mjs
//
// Prints one JSON line with what it saw. tests/examples.rs runs it against anvil.
import { createPublicClient, createWalletClient, http, webSocket, defineChain } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

const url = process.env.LIVECHAIN_URL ?? 'http://127.0.0.1:8545/ethereum';
const wsUrl = process.env.LIVECHAIN_WS ?? url.replace(/^http/, 'ws');
const account = privateKeyToAccount(process.env.PRIVATE_KEY);

// livechain answers eth_chainId from the chain it serves; build the chain object from it.
const probe = createPublicClient({ transport: http(url) });
const id = await probe.getChainId();
const chain = defineChain({
  id,
  name: `chain ${id}`,
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [url], webSocket: [wsUrl] } },
});

// `batch: true`: calls made together go out as one JSON-RPC batch, which livechain splits,
// routes and answers in order.
const client = createPublicClient({ chain, transport: http(url, { batch: true }) });
const [blockNumber, balance, nonce] = await Promise.all([
  client.getBlockNumber(),
  client.getBalance({ address: account.address }),
  client.getTransactionCount({ address: account.address }),
]);

// A transaction signed here: livechain sees only the raw bytes (eth_sendRawTransaction).
const wallet = createWalletClient({ account, chain, transport: http(url) });
const hash = await wallet.sendTransaction({
  to: '0x000000000000000000000000000000000000dEaD',
  value: 1000n,
});
const receipt = await client.waitForTransactionReceipt({ hash, timeout: 30_000 });

// New blocks over WebSocket (livechain's managed subscriptions survive an upstream's loss).
const ws = createPublicClient({ chain, transport: webSocket(wsUrl) });
const head = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no new block in 30 s')), 30_000);
  const stop = ws.watchBlocks({
    onBlock: (block) => { clearTimeout(timer); stop(); resolve(block.number); },
    onError: reject,
  });
});

console.log(JSON.stringify({
  client: 'viem',
  chainId: id,
  blockNumber: Number(blockNumber),
  balance: balance.toString(),
  nonce,
  hash,
  status: receipt.status,
  newHead: Number(head),
}));
process.exit(0);
