// mppx (0.11.0)'s own client paying an httpay demo route: `Mppx.create({methods}).fetch(url)`.
//
//   DEMO_URL=http://127.0.0.1:<port> DEMO_WALLET_KEY=<key> node mppx_fetch.mjs lightning <url>
//   EVM_KEY=0x<64 hex> node mppx_fetch.mjs evm <url>
//
// `lightning` is a custom client method built on mppx's published Method API (Method.from +
// Method.toClient): it pays the challenge's invoice with a demo wallet (POST /ln/pay) and answers with
// mppx's own Credential.serialize. `evm` is mppx's evm charge client with a viem account.
// Prints one JSON line: the status, body and Payment-Receipt of the paid fetch and how many times the
// method paid. Secrets (preimage, keys) stay out of the output.
import { Credential, Method, z } from 'mppx';
import { Mppx, evm } from 'mppx/client';
import { assets } from 'mppx/evm/client';
import { privateKeyToAccount } from 'viem/accounts';

const [kind, url] = process.argv.slice(2);
const { DEMO_URL, DEMO_WALLET_KEY, EVM_KEY } = process.env;
let payCalls = 0;

const lightningCharge = Method.from({
  name: 'lightning',
  intent: 'charge',
  schema: {
    credential: { payload: z.object({ preimage: z.string() }) },
    request: z.object({
      amount: z.string(),
      currency: z.optional(z.string()),
      description: z.optional(z.string()),
      methodDetails: z.object({ invoice: z.string(), paymentHash: z.optional(z.string()), network: z.optional(z.string()) }),
    }),
  },
});

const lightning = Method.toClient(lightningCharge, {
  async createCredential({ challenge }) {
    payCalls += 1;
    const r = await fetch(`${DEMO_URL}/ln/pay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${DEMO_WALLET_KEY}` },
      body: JSON.stringify({ invoice: challenge.request.methodDetails.invoice }),
    });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`demo network refused the payment: ${body.code || r.status}`);
    return Credential.serialize({ challenge, payload: { preimage: body.preimage } });
  },
});

let methods;
if (kind === 'lightning') {
  methods = [lightning];
} else if (kind === 'evm') {
  const account = privateKeyToAccount(EVM_KEY);
  const charge = evm.charge({ account, currencies: [assets.baseSepolia.USDC] });
  methods = [{ ...charge, createCredential: async (p) => { payCalls += 1; return charge.createCredential(p); } }];
} else {
  console.error('mppx_fetch: usage: mppx_fetch.mjs lightning|evm <url>');
  process.exit(2);
}

const mppx = Mppx.create({ methods, polyfill: false });
const res = await mppx.fetch(url);
const text = await res.text();
let body;
try { body = JSON.parse(text); } catch { body = text.slice(0, 300); }
console.log(JSON.stringify({ status: res.status, body, receipt: res.headers.get('payment-receipt'), payCalls }));
