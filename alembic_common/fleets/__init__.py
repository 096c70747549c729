"""Many runs at once: fleets of tenant databases (fleet, targets), the whole platform in
dependency order (platform), run figures (metrics), the startup hook (startup) and clients
behind PgBouncer (poolers)."""
