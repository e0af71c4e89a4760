// A real OpenID Connect provider (panva/node-oidc-provider) for kmsdash's single sign-on tests.
// Listens on 127.0.0.1:$PORT and prints "ready <issuer>" once it accepts connections.
// $OIDC_CLIENT: {"client_id", "client_secret", "redirect_uris"}; $OIDC_ACCOUNTS: {login: {"email", "groups"}}.
// Its development sign-in form (devInteractions) takes any password for a known login: the tests
// are about what kmsdash does with the provider's answer, not about the provider's password check.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const client = JSON.parse(process.env.OIDC_CLIENT);
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS);

const provider = new Provider(issuer, {
  clients: [{
    ...client,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: `sub-${id}`,
          preferred_username: id,
          name: id,
          email: account.email,
          email_verified: true,
          groups: account.groups,
        };
      },
    };
  },
  cookies: { keys: ['kmsdash-tests-only'] },
  features: { devInteractions: { enabled: true } },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
