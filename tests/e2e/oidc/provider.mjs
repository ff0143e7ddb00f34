// A real OpenID Connect provider for Veil's browser tests (npm `oidc-provider`), loopback only.
//
//   node provider.mjs --users users.json --client-id ID --client-secret S \
//                     --redirect-uri URI [--redirect-uri URI2 ...]
//
// Listens on 127.0.0.1 on a free port and prints one line `READY <issuer>` when it serves.
// Users come from a JSON file: {"<username>": {"password", "email", "name", "groups"?}}.
// The sign-in page checks the password (a wrong one is refused on the page); consent is
// implicit for the one first-party client. Every page is self-contained HTML: the package's
// default pages import web fonts from the internet, and these tests send traffic to loopback
// only.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    users: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    port: { type: 'string', default: '0' },
  },
});
for (const required of ['users', 'client-id', 'client-secret', 'redirect-uri']) {
  if (!args[required]) {
    console.error(`provider.mjs: --${required} is required`);
    process.exit(2);
  }
}
const users = JSON.parse(readFileSync(args.users, 'utf8'));

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

const page = (title, body) => `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>
  body { font-family: sans-serif; background: #f2f5f7; margin: 40px; }
  main { max-width: 340px; margin: 0 auto; background: #fff; padding: 24px; border-radius: 6px; }
  label { display: block; margin-top: 12px; }
  input { width: 100%; box-sizing: border-box; padding: 8px; font-size: 15px; }
  button { margin-top: 18px; width: 100%; padding: 10px; font-size: 15px; }
  .error { color: #a61b1b; }
</style></head>
<body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;

const loginForm = (uid, { error = '', login = '' } = {}) => page('Test identity provider', `
  <p>Sign in to continue to Veil.</p>
  ${error ? `<p class="error" role="alert">${escape(error)}</p>` : ''}
  <form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
    <label for="login">Username</label>
    <input id="login" name="login" type="text" value="${escape(login)}" required autofocus>
    <label for="password">Password</label>
    <input id="password" name="password" type="password" required>
    <button type="submit">Sign in</button>
  </form>`);

const configuration = {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    redirect_uris: args['redirect-uri'],
    // Streamlit sends its /oauth2callback as the post-logout redirect.
    post_logout_redirect_uris: args['redirect-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id, email: user.email, email_verified: true, name: user.name,
          groups: user.groups ?? [],
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    // Group claims travel with the profile scope, which Streamlit requests by default.
    profile: ['name', 'groups'],
  },
  // Streamlit reads identity from the ID token only: put the scope's claims in it.
  conformIdTokenClaims: false,
  cookies: { keys: ['veil-e2e-provider-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form}
          <p>Do you want to sign out of the test identity provider?</p>
          <button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
          <button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre>${escape(JSON.stringify(out, null, 2))}</pre>`);
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, IdToken: 3600, AccessToken: 3600 },
};

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 10000) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p>This sign-in request has expired. Start again.</p>'));
    return;
  }
  if (prompt.name === 'login') {
    if (req.method === 'GET') {
      send(res, 200, loginForm(uid));
      return;
    }
    if (action !== 'login' || req.method !== 'POST') {
      send(res, 405, page('Error', '<p>Not allowed.</p>'));
      return;
    }
    const form = await readForm(req);
    const login = (form.get('login') ?? '').trim();
    const user = users[login];
    if (!user || user.password !== form.get('password')) {
      send(res, 200, loginForm(uid, { error: 'Unknown username or wrong password.', login }));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } },
      { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    // One first-party client: grant what it asked for without a consent screen.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
    return;
  }
  send(res, 501, page('Error', `<p>Prompt ${escape(prompt.name)} is not supported.</p>`));
}

const server = http.createServer();
server.listen(Number(args.port), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const match = /^\/interaction\/([\w-]+)(?:\/(login))?$/.exec(new URL(req.url, issuer).pathname);
    if (!match) {
      callback(req, res);
      return;
    }
    interaction(provider, req, res, match[1], match[2]).catch((error) => {
      console.error('interaction error', error);
      if (!res.headersSent) send(res, 400, page('Error', `<p>${escape(error.message)}</p>`));
    });
  });
  console.log(`READY ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
}
