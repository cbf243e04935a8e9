"""The platform's scope catalog: the scopes and attributes its keys may carry."""
