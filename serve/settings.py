"""Typed settings of the gateway (env prefix ``INFIMED_``; the CLI fills the same object).

Unsafe combinations are refused at start-up: a public bind address without TLS needs an explicit
``allow_insecure_public``; no API key at all is refused unless ``auth_disabled`` is set for local
development.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split(v: object) -> object:
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFIMED_", extra="ignore")

    # --- network
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    allow_insecure_public: bool = False

    # --- engines
    model: str | None = None  # a local directory or a hub id (the launcher's engine)
    served_model_name: str | None = None
    engine_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)  # attach to running vLLM servers
    engine_port: int = 0  # 0 = pick a free loopback port
    engine_args: list[str] = Field(default_factory=list)  # passed through to vLLM
    lora: Annotated[list[str], NoDecode] = Field(default_factory=list)  # NAME=PATH
    engine_ready_timeout: float = 900.0
    engine_restart_max: int = 5

    # --- auth
    api_keys_file: Path | None = None
    api_key: str | None = None  # a single key from the environment (INFIMED_API_KEY)
    auth_disabled: bool = False
    rate_limit_per_minute: int = Field(default=600, ge=0)  # per key; 0 = off
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- limits
    max_concurrency: int = Field(default=64, ge=1)
    queue_size: int = Field(default=64, ge=0)
    queue_timeout: float = 5.0
    request_timeout: float = 600.0
    max_tokens_cap: int = Field(default=8192, ge=1)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)  # routes that carry images
    max_text_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # /v1/completions and anything else
    max_images: int = Field(default=8, ge=1)
    max_image_bytes: int = Field(default=48 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=100_000_000, ge=1)
    render_workers: int = Field(default=2, ge=1)
    render_cache_size: int = Field(default=256, ge=0)
    allowed_image_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    remote_fetch_timeout: float = 10.0
    # Burned-in text (BurnedInAnnotation YES, or absent on US/SC/OT…): refuse the image with the reason, or
    # black out the text OCR finds (needs the `ocr` extra; checked at start-up).
    burned_in_policy: Literal["refuse", "redact"] = "refuse"

    # --- pixel budget (read from the model's preprocessor_config.json when local; required otherwise)
    min_pixels: int | None = None
    max_pixels: int | None = None

    # --- logging
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for k in ("engine_urls", "lora", "cors_origins", "allowed_image_domains"):
                if k in data:
                    data[k] = _split(data[k])
        return data

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> GatewaySettings:
        public = self.host not in ("127.0.0.1", "localhost", "::1")
        tls = self.tls_certfile is not None and self.tls_keyfile is not None
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("TLS needs both a certificate and a key (--tls-certfile and --tls-keyfile)")
        if public and not tls and not self.allow_insecure_public:
            raise ValueError(
                f"refusing to serve plain HTTP on {self.host}: give --tls-certfile/--tls-keyfile, put the gateway "
                "behind a TLS proxy and set INFIMED_ALLOW_INSECURE_PUBLIC=1, or bind 127.0.0.1"
            )
        if not self.auth_disabled and not self.api_key and self.api_keys_file is None:
            raise ValueError("no API key configured: set INFIMED_API_KEY, --api-keys-file, or --no-auth for local development")
        if self.auth_disabled and public:
            raise ValueError("--no-auth is only allowed on a loopback address")
        if not self.model and not self.engine_urls:
            raise ValueError("give --model (the gateway starts vLLM) or --engine-url (attach to running engines)")
        if self.burned_in_policy == "redact":
            from core._redact import OCR_HINT, ocr_available

            if not ocr_available():
                raise ValueError(f"--burned-in-policy redact needs the OCR extra: {OCR_HINT}")
        for item in self.lora:
            if "=" not in item:
                raise ValueError(f"--lora expects NAME=PATH, got {item!r}")
        return self
