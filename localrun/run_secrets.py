"""The secrets of one local run (demo, benchmarks, load tests): random each run, never a default."""

from __future__ import annotations

import secrets

TOKEN_SECRET = secrets.token_urlsafe(24)  # CLOUD_AUTH_SECRET = DEVICE_TOKEN_SECRET
APP_SECRET = secrets.token_urlsafe(24)  # DEVICE_APP_SECRET: the apps' tokens to the agents
