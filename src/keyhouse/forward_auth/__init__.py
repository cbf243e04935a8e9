"""Forward auth: ``/forward-auth``, asked by a proxy (nginx, Traefik, Envoy) before each request."""
