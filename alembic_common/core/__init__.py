"""A run of one service: where its database is (settings, urls, db), what its history
declares (project, services, deps), what the database holds (state), what to do (plan),
the platform's history table (history), the lock (locking), the shared ``env.py`` body (env)
and the executor that runs ``up``, ``down`` and ``status`` (runner)."""
