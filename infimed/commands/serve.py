"""``infimed serve`` — the gateway, its supervised vLLM engine, and the UI mounted at ``/ui``.

    infimed serve --model DIR_OR_HUB_ID [--port 8000] [--lora NAME=PATH ...] [-- EXTRA VLLM ARGS]
    infimed serve --engine-url http://127.0.0.1:8101 [--engine-url ...] --max-pixels 1003520
    infimed serve keys create|list|revoke --file keys.jsonl ...
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("infimed.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the OpenAI-compatible gateway (and its vLLM engine)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", help="local model directory or hub id; the gateway starts vLLM on it")
    p.add_argument("--served-model-name", help="model name clients use (default: the directory name or hub id)")
    p.add_argument("--engine-url", action="append", default=[], help="attach to a running vLLM server (repeatable: replicas)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="public port (default 8000; 0 = any free port)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH", help="serve a LoRA adapter as its own model name")
    p.add_argument("--api-keys-file", type=Path, help="hashed API keys (see `infimed serve keys`)")
    p.add_argument("--no-auth", action="store_true", help="no API key (loopback only, for local development)")
    p.add_argument("--tls-certfile", type=Path)
    p.add_argument("--tls-keyfile", type=Path)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--burned-in-policy", choices=["refuse", "redact"], default=None,
                   help="images that may carry burned-in text: refuse them (default) or black out the text OCR "
                        "finds (needs the ocr extra)")  # fmt: skip
    p.add_argument("--min-pixels", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=None, help="pixel budget per image (read from the model when local)")
    p.add_argument("--engine-log", type=Path, default=None, help="write the engine's output here (default: a temp file)")
    p.add_argument("--no-ui", action="store_true", help="do not mount the clinician UI at /ui")
    p.add_argument("--ready-file", type=Path, default=None, help="write the public URL here once serving (for scripts)")
    p.add_argument("engine_args", nargs=argparse.REMAINDER, help="after --: extra arguments for vLLM")
    p.set_defaults(func=run)


def _keys_parser() -> argparse.ArgumentParser:
    k = argparse.ArgumentParser(prog="infimed serve keys", description="manage API keys (stored hashed)")
    k.add_argument("action", choices=["create", "list", "revoke"])
    k.add_argument("key_id", nargs="?", help="the key id to revoke")
    k.add_argument("--file", type=Path, required=True)
    k.add_argument("--name", default="default")
    return k


def run_keys(args: argparse.Namespace) -> int:
    from serve.auth import KeyStore

    store = KeyStore(args.file)
    if args.action == "create":
        rec, token = store.create(args.name)
        print(f"created key {rec.id} ({rec.name}). Store it now; it is not shown again:\n{token}")
    elif args.action == "list":
        for r in store.list():
            print(f"{r.id}\t{r.name}\t{r.created}\t{'revoked' if r.revoked else 'active'}")
    else:
        if not args.key_id:
            print("infimed serve keys revoke: give the key id (see `keys list`)", file=sys.stderr)
            return 2
        if not store.revoke(args.key_id):
            print(f"infimed serve keys revoke: no key {args.key_id} in {args.file}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def _served_name(model: str) -> str:
    p = Path(model)
    return p.name if p.exists() else model


def run(args: argparse.Namespace) -> int:
    if args.engine_args[:1] == ["keys"]:
        return run_keys(_keys_parser().parse_args(args.engine_args[1:]))
    import uvicorn
    from pydantic import ValidationError

    from core.budget import BudgetError, PixelBudget
    from serve.app import create_app
    from serve.launcher import EngineProcess, EngineSpec
    from serve.settings import GatewaySettings

    overrides = {k: v for k, v in {
        "model": args.model, "served_model_name": args.served_model_name, "host": args.host, "port": args.port,
        "api_keys_file": args.api_keys_file, "tls_certfile": args.tls_certfile, "tls_keyfile": args.tls_keyfile,
        "max_images": args.max_images, "min_pixels": args.min_pixels, "max_pixels": args.max_pixels,
        "burned_in_policy": args.burned_in_policy,
    }.items() if v is not None}  # fmt: skip
    if args.engine_url:
        overrides["engine_urls"] = args.engine_url
    if args.lora:
        overrides["lora"] = args.lora
    if args.no_auth:
        overrides["auth_disabled"] = True
    extra = [a for a in args.engine_args if a != "--"]
    if extra:
        overrides["engine_args"] = extra
    try:
        settings = GatewaySettings(**overrides)
    except ValidationError as e:
        print(f"infimed serve: {e.errors()[0]['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2

    # --- pixel budget: the model's own processor config when local, else the settings
    try:
        if settings.model and Path(settings.model).is_dir():
            budget = PixelBudget.from_preprocessor_config(settings.model)
            budget = budget.with_limits(min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
        elif settings.max_pixels:
            budget = PixelBudget(min_pixels=settings.min_pixels or 4 * 28 * 28, max_pixels=settings.max_pixels)
        else:
            print("infimed serve: --max-pixels is required when the model is not a local directory "
                  "(Qwen2.5-VL uses 12845056 by default; 1003520 is a common serving budget)", file=sys.stderr)  # fmt: skip
            return 2
    except BudgetError as e:
        print(f"infimed serve: {e}", file=sys.stderr)
        return 2

    engine: EngineProcess | None = None
    engine_urls = list(settings.engine_urls)
    if settings.model and not engine_urls:
        if Path(settings.model).exists() is False and "/" not in settings.model:
            print(f"infimed serve: --model {settings.model}: no such directory (and not a hub id like org/name)", file=sys.stderr)
            return 2
        log_file = args.engine_log or Path(os.environ.get("TMPDIR", "/tmp")) / f"infimed-engine-{os.getpid()}.log"
        spec = EngineSpec(model=settings.model, served_model_name=settings.served_model_name or _served_name(settings.model),
                          max_images=settings.max_images, lora=settings.lora, extra_args=settings.engine_args, port=settings.engine_port,
                          log_file=log_file)  # fmt: skip
        engine = EngineProcess(spec, restart_max=settings.engine_restart_max)
        engine_urls = [engine.url]

    app = create_app(settings, budget=budget, engine_urls=engine_urls)
    if not args.no_ui:
        _mount_ui(app, settings)

    stop = threading.Event()

    def _terminate(signum, frame):  # noqa: ARG001
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if engine is not None:
            engine.start()
            _wait_with_progress(engine, settings.engine_ready_timeout)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                                ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
                                ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
                                timeout_graceful_shutdown=5)  # fmt: skip
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # we handle SIGINT/SIGTERM ourselves

        def _announce() -> None:
            while not server.started and not stop.is_set():
                stop.wait(0.1)
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                scheme = "https" if settings.tls_certfile else "http"
                url = f"{scheme}://{settings.host}:{port}"
                log.info("gateway ready on %s (API %s/v1)", url, url)
                app.state.public_url = url  # the UI's API base (read lazily: --port 0 is known only now)
                if getattr(app.state, "announce_ui", None):
                    app.state.announce_ui(url)
                if args.ready_file:
                    args.ready_file.write_text(url)

        threading.Thread(target=_announce, daemon=True).start()
        server.run()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        print(f"infimed serve: {e}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            log.info("stopping the engine")
            engine.stop()
    return 0


def _wait_with_progress(engine, timeout: float) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("starting the model engine (vLLM)…") as status:
        engine.wait_ready(timeout, progress=lambda s: status.update(f"starting the model engine (vLLM)… {s:.0f} s"))
    console.print(f"engine ready at {engine.url} (loopback only)")


def _mount_ui(app, settings) -> None:
    """Mount the clinician UI at /ui with its own in-memory API key and a login.

    The password is ``INFIMED_UI_PASSWORD`` or generated; it is printed to the console only (never
    logged). The UI reaches the API at the gateway's own URL, known once uvicorn has started
    (``app.state.public_url``, set by ``_announce``).
    """
    try:
        from ui.app import mount_ui
    except ImportError as e:
        if e.name not in ("ui", "ui.app", "gradio"):
            raise  # a bug inside the UI, not a build without it: fail loudly
        log.warning("the clinician UI is not part of this build (%s is missing); /ui is not mounted", e.name)
        return
    import secrets

    key = app.state.gateway.keys.add_ephemeral("ui")
    username = os.environ.get("INFIMED_UI_USERNAME", "clinician")
    password = os.environ.get("INFIMED_UI_PASSWORD") or secrets.token_urlsafe(12)
    app.state.public_url = None

    def api_url() -> str:
        url = getattr(app.state, "public_url", None)
        if not url:
            return ""
        # The UI calls the gateway in-process over loopback: a wildcard bind address is not a destination.
        for wildcard in ("0.0.0.0", "[::]", "::"):
            url = url.replace(f"://{wildcard}:", "://127.0.0.1:")
        return f"{url}/v1"

    # Over TLS the UI calls this gateway's own HTTPS port on the loopback, trusting exactly its certificate.
    mount_ui(app, api_url=api_url, api_key=key, username=username, password=password, api_cert=settings.tls_certfile)

    def announce(url: str) -> None:
        print(f"clinician UI: {url}/ui/  (user {username!r}, password {password!r})", file=sys.stderr, flush=True)
        log.info("clinician UI on %s/ui/ (user %r; the password is printed on the console only)", url, username)

    app.state.announce_ui = announce
