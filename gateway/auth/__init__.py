"""Sign-in: the OpenID Connect client, the session authenticator and the development provider."""
