"""Meta routes: liveness and readiness."""
