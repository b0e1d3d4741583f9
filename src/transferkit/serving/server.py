"""Run the server: load the model once, then hand the app to uvicorn (:func:`serve`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ..errors import ConfigError
from .app import ServeSettings, create_app
from .predictors import load_predictor

DEFAULT_HOST = "127.0.0.1"


def check_settings(settings: ServeSettings) -> None:
    """Refuse impossible settings with one sentence each."""
    if settings.max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, not {settings.max_batch}.")
    if settings.max_wait_ms < 0:
        raise ConfigError(f"--max-wait-ms must be 0 or more, not {settings.max_wait_ms}.")
    if not settings.max_request_mb > 0:
        raise ConfigError(f"--max-request-mb must be more than 0, not {settings.max_request_mb}.")
    if settings.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, not {settings.top_k}.")


def serve(path: str | Path, *, host: str = DEFAULT_HOST, port: int = 8000, settings: ServeSettings | None = None,
          trust_code: bool = False, log_level: str = "info") -> None:
    """Serve the model at ``path`` (run / saved-model folder, or exported folder) on ``host:port`` until stopped.

    Binds 127.0.0.1 unless ``host`` says otherwise: exposing the server is the caller's decision.
    """
    import uvicorn

    settings = settings or ServeSettings()
    check_settings(settings)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {port}.")
    predictor = load_predictor(path, trust_code=trust_code)
    app = create_app(predictor, settings)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s: %(message)s")
    print(f"serving {predictor.engine} model {path} ({predictor.modality}, {len(predictor.classes)} classes) on "
          f"http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
