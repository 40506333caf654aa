"""A wallet back-end's everyday calls through livechain, with web3.py: reads over HTTP, a
transaction signed here and sent, and new blocks over WebSocket.

    LIVECHAIN_URL=http://127.0.0.1:8545/ethereum/YOUR_KEY \\
    LIVECHAIN_WS=ws://127.0.0.1:8545/ethereum/YOUR_KEY \\
    PRIVATE_KEY=0x... python examples/web3_example.py

Prints one JSON line with what it saw. tests/examples.rs runs it against anvil.
"""

import asyncio
import json
import os

from web3 import AsyncWeb3, Web3
from web3.providers.persistent import WebSocketProvider

URL = os.environ.get("LIVECHAIN_URL", "http://127.0.0.1:8545/ethereum")
WS_URL = os.environ.get("LIVECHAIN_WS", URL.replace("http", "ws", 1))


def reads_and_a_transaction():
    w3 = Web3(Web3.HTTPProvider(URL, request_kwargs={"timeout": 30}))
    account = w3.eth.account.from_key(os.environ["PRIVATE_KEY"])
    # A JSON-RPC batch: livechain splits, routes and answers it in order.
    with w3.batch_requests() as batch:
        batch.add(w3.eth.get_block_number())
        batch.add(w3.eth.get_balance(account.address))
        batch.add(w3.eth.get_transaction_count(account.address))
        block_number, balance, nonce = batch.execute()
    chain_id = w3.eth.chain_id
    # Signed here: livechain sees only the raw bytes (eth_sendRawTransaction).
    tx = {
        "to": "0x000000000000000000000000000000000000dEaD",
        "value": 1000,
        "gas": 21000,
        "maxFeePerGas": w3.eth.gas_price * 2,
        "maxPriorityFeePerGas": w3.eth.max_priority_fee,
        "nonce": nonce,
        "chainId": chain_id,
    }
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    return {
        "chainId": chain_id,
        "blockNumber": block_number,
        "balance": str(balance),
        "nonce": nonce,
        "hash": "0x" + tx_hash.hex().removeprefix("0x"),
        "status": "success" if receipt["status"] == 1 else "reverted",
    }


async def a_new_head():
    # New blocks over WebSocket (livechain's managed subscriptions).
    async with AsyncWeb3(WebSocketProvider(WS_URL)) as w3:
        await w3.eth.subscribe("newHeads")
        async for message in w3.socket.process_subscriptions():
            return int(message["result"]["number"])


def main():
    out = {"client": "web3.py", **reads_and_a_transaction()}
    out["newHead"] = asyncio.run(asyncio.wait_for(a_new_head(), timeout=30))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
