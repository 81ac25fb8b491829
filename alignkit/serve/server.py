"""``alignkit serve MODEL``: load a model, build its rollout engine, run the app under uvicorn.

The one line on stdout, ``serving MODEL at http://HOST:PORT/v1``, is printed only once the socket
accepts connections (uvicorn's ``started``), so a script can wait for it and then connect. Port 0
picks a free port; the line gives the real one. Logs (uvicorn's included) go to stderr. The API
key is read from the environment variable named by ``--api-key-env``, never from the command line
(visible in ``ps``) and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

log = logging.getLogger(__name__)


def read_api_key(env_var: str | None) -> str | None:
    """The key in ``$env_var``; an error when a variable is named but empty (never serve open by mistake)."""
    if env_var is None:
        return None
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise ValueError(f"--api-key-env {env_var}: that environment variable is not set or is empty")
    return key


def build_app(model: str, *, api_key: str | None = None, served_name: str | None = None, max_batch: int = 64,
              dtype: str = "auto", **app_options):
    """Load ``model`` (run directory, LoRA adapter directory, hub id or alias) and wrap it in the app."""
    import torch

    from alignkit.models import load_policy, load_tokenizer
    from alignkit.rollout import make_engine
    from alignkit.serve.app import create_app

    tokenizer = load_tokenizer(model)
    policy = load_policy(model).eval()  # LoRA adapters come back merged into the base
    engine = make_engine(policy, tokenizer, max_batch=max_batch, **({} if dtype == "auto" else {"dtype": getattr(torch, dtype)}))
    context_length = getattr(policy.config, "max_position_embeddings", None) or 2048
    return create_app(engine, tokenizer, model=policy, model_name=served_name or model, context_length=context_length,
                      api_key=api_key, **app_options)


def _uvicorn_server(app, host: str, port: int, *, access_log: bool = True):
    import uvicorn

    # log_config=None: uvicorn keeps its hands off logging, so its records reach our stderr handler
    # (its default config would print the access log on stdout, next to the one promised line).
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=access_log, lifespan="on")
    return uvicorn.Server(config)


def _bound_port(server) -> int:
    return server.servers[0].sockets[0].getsockname()[1]


def run(app, *, host: str, port: int, shown_name: str, access_log: bool = True) -> None:
    """Serve until interrupted; print the ready line once connections are accepted."""
    server = _uvicorn_server(app, host, port, access_log=access_log)

    async def main():
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():  # failed at startup (e.g. the port is taken): uvicorn has logged why
                await serving
                raise SystemExit(1)
            await asyncio.sleep(0.02)
        print(f"serving {shown_name} at http://{host}:{_bound_port(server)}/v1", flush=True)
        await serving

    asyncio.run(main())


class BackgroundServer:
    """The same server on a thread of this process (tests, and a judge served next to its user):

        with BackgroundServer(app) as base_url:   # "http://127.0.0.1:PORT/v1"
            ...
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.server = _uvicorn_server(app, host, port, access_log=False)
        self.host = host
        self.thread = threading.Thread(target=self._run, name="alignkit-serve", daemon=True)

    def _run(self):
        asyncio.run(self.server.serve())

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server failed to start; see the log")
            self.thread.join(0.02)
        return f"http://{self.host}:{_bound_port(self.server)}/v1"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
