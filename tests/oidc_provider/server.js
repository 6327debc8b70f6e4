// A real OpenID Connect provider standing in for Pro Santé Connect (PSC) in the tests and the
// demo: panva's oidc-provider (OpenID Certified), so the portal's sign-in runs the whole
// authorization code flow with PKCE, the ID token signature, the userinfo call and the
// back-channel logout against a provider that enforces the specifications, not against a stub.
//
//   node server.js --clients clients.json --accounts accounts.json [--port 0] [--host 127.0.0.1]
//
// clients.json: [{client_id, client_secret, redirect_uris, backchannel_logout_uri,
//                 token_endpoint_auth_method}] (oidc-provider's client metadata).
// accounts.json: [{login, password?, claims: {sub, SubjectNameID, SubjectRefPro, ...}}]: the
//                claims mimic PSC's userinfo (scope "scope_all").
// Once listening it prints one JSON line on stdout: {"issuer": "http://127.0.0.1:PORT"}.
//
// The login is a plain HTML form (the PSC account's login, and its password when the account
// has one), then a consent form: a browser or an HTTP client goes through authorize -> login
// -> consent -> callback like a person would. Never expose it beyond loopback: it is a test
// double, its accounts are fictitious and its signing keys are made up at each start.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';

import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string' },
    accounts: { type: 'string' },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});

const clients = JSON.parse(readFileSync(args.clients, 'utf8'));
const accounts = new Map(
  JSON.parse(readFileSync(args.accounts, 'utf8')).map((account) => [account.login, account]),
);

// PSC's userinfo claims, all granted by its "scope_all" scope.
const PSC_CLAIMS = [
  'SubjectNameID', 'SubjectRefPro', 'SubjectRole', 'SubjectOrganization', 'SubjectOrganizationID',
  'Secteur_Activite', 'Palier_Authentification', 'otherIds', 'given_name', 'family_name',
  'preferred_username', 'email',
];

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>`
    + `<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

  const server = createServer();
  await new Promise((resolve) => { server.listen(Number(args.port), args.host, resolve); });
  const issuer = `http://${args.host}:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'scope_all'],
    claims: { openid: ['sub'], scope_all: PSC_CLAIMS },
    // PKCE on every authorization request, S256 only: a request without code_challenge is
    // refused and the token request must send the matching code_verifier.
    pkce: { required: () => true, methods: ['S256'] },
    features: {
      devInteractions: { enabled: false },
      backchannelLogout: { enabled: true },
      // The provider's own sign-out pages, without the default ones' web fonts (no network).
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Déconnexion de Pro Santé Connect (fournisseur de test)',
            `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Se déconnecter</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Vous êtes déconnecté de Pro Santé Connect', '');
        },
      },
    },
    // oidc-provider refuses outgoing requests to special-use addresses (SSRF protection) and
    // gives them 2.5 s; this test double's only client is the portal on loopback, on a busy
    // test machine: its back-channel logout goes there, with more time.
    fetch: (url, { dispatcher, signal, ...options }) => globalThis.fetch(url, {
      ...options, signal: AbortSignal.timeout(15000),
    }),
    async findAccount(ctx, sub) {
      const account = [...accounts.values()].find((a) => a.claims.sub === sub);
      if (!account) return undefined;
      return { accountId: sub, async claims() { return { ...account.claims, sub } } };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  });

  async function finish(ctx, result, mergeWithLastSubmission) {
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission }));
  }

  // The login and consent pages (oidc-provider leaves them to the host application).
  provider.use(async (ctx, next) => {
    const match = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/);
    if (!match) return next();
    const [, uid, action] = match;
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
    const { prompt, params } = details;

    if (ctx.method === 'GET' && !action) {
      ctx.type = 'html';
      if (prompt.name === 'login') {
        const failed = ctx.query.error ? '<p role="alert">Identifiant ou mot de passe inconnu.</p>' : '';
        ctx.body = page('Connexion Pro Santé Connect (fournisseur de test)',
          `${failed}<form method="post" action="/interaction/${uid}/login">`
          + '<label>Identifiant <input name="login" autocomplete="username"></label>'
          + '<label>Mot de passe <input name="password" type="password"></label>'
          + '<button type="submit">Se connecter</button></form>');
      } else {
        ctx.body = page('Autoriser le portail',
          `<p>Le service ${escapeHtml(params.client_id)} demande : ${escapeHtml(params.scope)}.</p>`
          + `<form method="post" action="/interaction/${uid}/confirm"><button type="submit">Autoriser</button></form>`
          + `<form method="post" action="/interaction/${uid}/abort"><button type="submit">Refuser</button></form>`);
      }
      return undefined;
    }
    if (ctx.method !== 'POST') ctx.throw(405);

    if (action === 'login') {
      const form = await readForm(ctx.req);
      const account = accounts.get(form.get('login') || '');
      if (!account || (account.password && account.password !== form.get('password'))) {
        ctx.redirect(`/interaction/${uid}?error=1`);
        return undefined;
      }
      return finish(ctx, { login: { accountId: account.claims.sub, amr: ['pwd'] } }, false);
    }
    if (action === 'confirm') {
      await readForm(ctx.req);
      const { details: missing } = prompt;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      const grantId = await grant.save();
      return finish(ctx, { consent: { grantId } }, true);
    }
    await readForm(ctx.req);
    return finish(ctx, { error: 'access_denied', error_description: 'Refusé par l’utilisateur' }, false);
  });

  provider.on('backchannel.error', (ctx, err, client) => {
    console.error(`back-channel logout to ${client.clientId} failed: ${err.message}`);
  });
  provider.on('server_error', (ctx, err) => { console.error(err); });

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
