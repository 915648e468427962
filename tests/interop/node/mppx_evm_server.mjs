// An MPP service built only from mppx (0.11.0): its `evm` charge method with a `settle` hook in
// place of a facilitator, so the EIP-3009 signature is checked by mppx's own code and nothing
// leaves the machine. The hook refuses an authorization it settled before (mppx leaves that to it).
//
//   node mppx_evm_server.mjs [--demo <ignored>] [--recipient 0x...] [--amount 0.01]
//
// Prints one JSON line `{"port": N, "recipient": "0x..."}` once it listens on 127.0.0.1.
//   GET /paid    402 + `WWW-Authenticate: Payment ... method="evm", intent="charge"` (base-sepolia USDC),
//                200 + `Payment-Receipt` once mppx verified the authorization and the hook settled it.
//   GET /stats   what was settled (payer, value, nonce) and how many challenges were answered.
import crypto from 'node:crypto';
import http from 'node:http';
import { Errors } from 'mppx';
import { Mppx, evm } from 'mppx/server';
import { assets } from 'mppx/evm/server';

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const RECIPIENT = arg('--recipient', '0x' + crypto.randomBytes(20).toString('hex'));
const AMOUNT = arg('--amount', '0.01');
const stats = { settled: [], challenges: 0, refused: 0 };
// mppx leaves replay protection to a custom settler (the chain would refuse a used EIP-3009 nonce):
// this one keeps the used (from, nonce) pairs, as a real settler must.
const used = new Set();

const mppx = Mppx.create({
  methods: [evm.charge({
    currency: assets.baseSepolia.USDC,
    recipient: RECIPIENT,
    settle: async ({ payload, source }) => {
      const key = `${payload.from.toLowerCase()}:${payload.nonce.toLowerCase()}`;
      if (used.has(key)) throw new Errors.VerificationFailedError({ reason: 'authorization already used' });
      used.add(key);
      stats.settled.push({ from: payload.from, to: payload.to, value: payload.value, nonce: payload.nonce, source });
      return { reference: '0x' + crypto.randomBytes(32).toString('hex') };
    },
  })],
  realm: '127.0.0.1',
  secretKey: crypto.randomBytes(32).toString('base64'),
});

const listener = Mppx.toNodeListener(mppx.charge({ amount: AMOUNT }));

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  if (path === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(stats));
  }
  if (path !== '/paid') {
    res.writeHead(404);
    return res.end();
  }
  try {
    const result = await listener(req, res);
    if (result.status === 402) {
      if (req.headers.authorization) stats.refused += 1;
      else stats.challenges += 1;
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ paid: true }));
  } catch (e) {
    console.error(e);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  }
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port, recipient: RECIPIENT }));
});
