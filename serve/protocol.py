"""Request models of the public API, in OpenAI field order; InfiMed extensions are marked as such.

The gateway validates what it must understand (types, ranges, limits) and forwards the original JSON,
so fields it does not model still reach vLLM unchanged (``extra="allow"``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve.errors import APIError


class DicomOptions(BaseModel):
    """InfiMed extension: ``image_url.dicom`` on a ``data:application/dicom;base64,…`` part."""

    model_config = ConfigDict(extra="forbid")
    window: str | dict[str, float] | None = Field(
        default=None, description="preset (lung, mediastinum, soft_tissue, bone, brain), 'auto', or {center, width} in HU"
    )
    composite: Literal["ct3"] | None = Field(default=None, description="three CT windows into the R, G, B channels")
    frames: str | list[int] | None = Field(default=None, description="'auto', 'uniform:N' or a list of frame/slice indices")


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(description="data:image/png|jpeg|webp;base64,… or data:application/dicom;base64,…")
    detail: str | None = None
    dicom: DicomOptions | None = Field(default=None, description="InfiMed extension: how to render a DICOM part")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    user: str | None = None

    @field_validator("messages")
    @classmethod
    def _check_messages(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, m in enumerate(v):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
                raise ValueError(f"messages[{i}] needs a role of system, user, assistant, tool or developer")
            c = m.get("content")
            if c is None and m.get("role") != "assistant":
                raise ValueError(f"messages[{i}] has no content")
            if c is not None and not isinstance(c, (str, list)):
                raise ValueError(f"messages[{i}].content must be a string or a list of parts")
            if isinstance(c, list):
                for j, part in enumerate(c):
                    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                        raise ValueError(f"messages[{i}].content[{j}] must be an object with a 'type'")
                    if part["type"] == "image_url":
                        try:
                            ImageURL.model_validate(part.get("image_url") if isinstance(part.get("image_url"), dict) else {"url": part.get("image_url")})
                        except ValidationError as e:
                            raise ValueError(f"messages[{i}].content[{j}].image_url: {e.errors()[0]['msg']}") from None
                    elif part["type"] == "text" and not isinstance(part.get("text"), str):
                        raise ValueError(f"messages[{i}].content[{j}].text must be a string")
        return v


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool | None = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    stop: str | list[str] | None = None


class RenderRequest(BaseModel):
    """InfiMed extension: ``POST /v1/infimed/render`` — what the model would see for these parts."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    content: list[dict[str, Any]] = Field(min_length=1, description="OpenAI content parts (image_url, with the dicom extension)")
    include_images: bool = True


def parse(model: type[BaseModel], body: Any) -> BaseModel:
    """Validate a JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        raise APIError(400, f"{loc}: {msg}" if loc else msg, param=loc, code="invalid_value") from None
