// mppx (0.11.0)'s own client paying an httpay demo lightning *session* route with a custom client method
// built on its published Method API ([lns]): the first challenge opens the session (the deposit paid by a
// demo wallet, an amount-less return invoice of that wallet), later ones are answered with `bearer`, and
// once the deposit it counted is spent it pays the fresh challenge's deposit and answers `topUp`.
//
//   DEMO_URL=... DEMO_WALLET_KEY=... node mppx_session.mjs <url> <requests>
//
// Prints one JSON line: the statuses and bodies' `status`/`symbol`, the actions sent, the session id.
import { Credential, Method, z } from 'mppx';
import { Mppx } from 'mppx/client';

const [url, count] = process.argv.slice(2);
const { DEMO_URL, DEMO_WALLET_KEY } = process.env;
const auth = { 'content-type': 'application/json', authorization: `Bearer ${DEMO_WALLET_KEY}` };
const state = { sessionId: null, preimage: null, unit: 0, balance: 0, actions: [] };

async function pay(invoice) {
  const r = await fetch(`${DEMO_URL}/ln/pay`, { method: 'POST', headers: auth, body: JSON.stringify({ invoice }) });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`demo network refused the payment: ${body.code || r.status}`);
  return body.preimage;
}

const lightningSession = Method.from({
  name: 'lightning',
  intent: 'session',
  schema: {
    credential: { payload: z.object({ action: z.string() }) },
    request: z.object({
      amount: z.string(), currency: z.optional(z.string()), unitType: z.optional(z.string()),
      depositInvoice: z.string(), paymentHash: z.string(), depositAmount: z.optional(z.string()),
      idleTimeout: z.optional(z.string()),
    }),
  },
});

const session = Method.toClient(lightningSession, {
  async createCredential({ challenge }) {
    const req = challenge.request;
    let payload;
    if (state.sessionId === null || state.balance < state.unit) {
      const preimage = await pay(req.depositInvoice);
      if (state.sessionId === null) {
        const r = await fetch(`${DEMO_URL}/ln/invoices`, { method: 'POST', headers: auth,
          body: JSON.stringify({ description: 'mppx session refund' }) });
        const ret = (await r.json()).payment_request;
        Object.assign(state, { sessionId: req.paymentHash, preimage, unit: Number(req.amount),
          balance: Number(req.depositAmount) - Number(req.amount) });
        payload = { action: 'open', preimage, returnInvoice: ret };
      } else {
        state.balance += Number(req.depositAmount);
        payload = { action: 'topUp', sessionId: state.sessionId, topUpPreimage: preimage };
      }
    } else {
      state.balance -= state.unit;
      payload = { action: 'bearer', sessionId: state.sessionId, preimage: state.preimage };
    }
    state.actions.push(payload.action);
    return Credential.serialize({ challenge, payload });
  },
});

const mppx = Mppx.create({ methods: [session], polyfill: false });
const answers = [];
for (let i = 0; i < Number(count); i++) {
  const res = await mppx.fetch(url);
  const body = await res.json().catch(() => ({}));
  answers.push({ status: res.status, symbol: body.symbol ?? null, ack: body.status ?? null });
}
console.log(JSON.stringify({ answers, actions: state.actions, sessionId: state.sessionId }));
