// A real OpenID provider (the npm package `oidc-provider`) for the gateway's sign-in tests.
// Started by tests/fakes/node_idp.py; prints `READY <port>` on stdout once it accepts connections.
//
// Environment:
//   PORT                      port on 127.0.0.1 (0 or unset: any free port; the issuer follows it)
//   ISSUER                    issuer URL (default http://127.0.0.1:<port>)
//   CLIENT_ID, CLIENT_SECRET  the gateway's confidential client (client_secret_basic)
//   CLI_CLIENT_ID             a public native client for `notebook-gateway login` (optional): no secret,
//                             loopback redirect http://127.0.0.1:<any port>/callback (RFC 8252), device flow
//   REDIRECT_URIS             comma-separated, matched exactly
//   POST_LOGOUT_REDIRECT_URIS comma-separated (optional)
//   BACKCHANNEL_LOGOUT_URI    where to POST logout tokens when a session ends (optional)
//   ID_TOKEN_TTL_S, ACCESS_TOKEN_TTL_S  token lifetimes (default 3600)
//   USERS                     JSON {"email": {"password": "...", "groups": [...], "name": "...", "sub": "..."}}
//                             (default: alice@example.com and bob@example.com, password "password")
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const env = process.env;
const list = (value) => (value || '').split(',').map((s) => s.trim()).filter(Boolean);
const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const defaultUsers = {
  'alice@example.com': { password: 'password', groups: ['ml-team', 'staff'], name: 'Alice Example', sub: 'id-alice' },
  'bob@example.com': { password: 'password', groups: ['staff'], name: 'Bob Example', sub: 'id-bob' },
};
// Keyed by lower-cased email, because login names are case-insensitive; the claim keeps the spelling given.
const users = new Map(
  Object.entries(env.USERS ? JSON.parse(env.USERS) : defaultUsers)
    .map(([email, user]) => [email.toLowerCase(), { email, sub: `id-${email.split('@')[0]}`, name: email, ...user }]),
);
const usersBySub = new Map([...users.values()].map((user) => [user.sub, user]));

// A fresh signing key per run: tests must fetch the JWKS, never trust a key baked in somewhere.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const scopes = ['openid', 'email', 'profile', 'groups', 'offline_access'];

function configuration() {
  const client = {
    client_id: env.CLIENT_ID,
    client_secret: env.CLIENT_SECRET,
    redirect_uris: list(env.REDIRECT_URIS),
    post_logout_redirect_uris: list(env.POST_LOGOUT_REDIRECT_URIS),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  };
  if (env.BACKCHANNEL_LOGOUT_URI) {
    client.backchannel_logout_uri = env.BACKCHANNEL_LOGOUT_URI;
    client.backchannel_logout_session_required = true;
  }
  const clients = [client];
  if (env.CLI_CLIENT_ID) {
    clients.push({
      client_id: env.CLI_CLIENT_ID,
      application_type: 'native', // a loopback redirect_uri matches on any port
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
    });
  }
  const ttl = (name, fallback) => Number(env[name] || fallback);
  return {
    clients,
    jwks: { keys: [signingKey] },
    cookies: {
      keys: [crypto.randomBytes(32).toString('hex')],
      // Distinct names: the gateway under test shares the 127.0.0.1 cookie jar (cookies ignore ports).
      names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_interaction_resume' },
    },
    scopes,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    // Put the scope-granted claims (email, groups) in the ID token, not only in /userinfo.
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      const user = usersBySub.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: user.email,
            email_verified: true,
            name: user.name,
            preferred_username: user.email.split('@')[0],
            groups: user.groups,
          };
        },
      };
    },
    responseTypes: ['code'],
    pkce: { methods: ['S256'], required: () => true },
    // Always, not only when offline_access is asked for with prompt=consent: the gateway refreshes sessions.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
    ttl: {
      AccessToken: ttl('ACCESS_TOKEN_TTL_S', 3600),
      AuthorizationCode: 60,
      IdToken: ttl('ID_TOKEN_TTL_S', 3600),
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    clientBasedCORS: () => false,
    features: {
      devInteractions: { enabled: false },
      backchannelLogout: { enabled: true },
      revocation: { enabled: true },
      deviceFlow: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // The confirm button sits inside the form, so a scripted browser can submit it like a person would.
        async logoutSource(ctx, form) {
          const action = form.match(/action="([^"]*)"/)[1];
          const xsrf = form.match(/name="xsrf" value="([^"]*)"/)[1];
          ctx.body = page('Sign out', `<form method="post" action="${action}">
            <input type="hidden" name="xsrf" value="${xsrf}">
            <button type="submit" name="logout" value="yes">Yes, sign me out</button></form>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<p>You are signed out.</p>');
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre id="error">${escape(JSON.stringify(out))}</pre>`);
    },
  };
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body><h1>${escape(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, error) {
  const message = error ? `<p id="error">${escape(error)}</p>` : '';
  return page('Test provider sign-in', `${message}
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Email <input type="text" name="login" autofocus></label>
  <label>Password <input type="password" name="password"></label>
  <button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Our own interaction routes: a login form that checks the password, and consent granted without asking.
function interactions(provider) {
  return async (ctx, next) => {
    const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (!match) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params, session } = details;
    ctx.set('Cache-Control', 'no-store');
    if (ctx.method === 'GET' && prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = loginPage(details.uid);
      return undefined;
    }
    if (ctx.method === 'POST' && match[2] && prompt.name === 'login') {
      const form = await readForm(ctx.req);
      const user = users.get((form.get('login') || '').trim().toLowerCase());
      if (!user || user.password !== form.get('password')) {
        ctx.status = 200; // like a real login page: the form again, with a message
        ctx.type = 'html';
        ctx.body = loginPage(details.uid, 'Invalid email or password.');
        return undefined;
      }
      const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: user.sub } }, {
        mergeWithLastSubmission: false,
      });
      ctx.status = 303;
      return ctx.redirect(to);
    }
    if (prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const missing = prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scope] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scope.join(' '));
      }
      const grantId = await grant.save();
      const to = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } }, {
        mergeWithLastSubmission: true,
      });
      ctx.status = 303;
      return ctx.redirect(to);
    }
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Error', `<p id="error">unexpected interaction ${escape(prompt.name)}</p>`);
    return undefined;
  };
}

const server = http.createServer();
server.listen(Number(env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(env.ISSUER || `http://127.0.0.1:${port}`, configuration());
  provider.use(interactions(provider));
  // Errors the provider answers itself (invalid_grant and the like) are expected in tests; log them briefly.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  process.stdout.write(`READY ${port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
