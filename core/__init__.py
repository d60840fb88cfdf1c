"""What the API and the workers share: settings, the per-process runtime (engine, sessions, blobs,
broker), the Celery app factory and the reaper. `api` and `workers` import this, never each other."""
