"""Rewrite the images of a chat request into small de-identified PNGs the engine accepts.

Every ``image_url`` part goes through ``core.render`` (the same function training and the UI preview
use) to the model's pixel budget:

- ``data:image/png|jpeg|webp;base64,…`` — resized to the budget; an image already within budget is
  forwarded unchanged (no re-encode).
- ``data:application/dicom;base64,…`` with an optional ``"dicom": {window, composite, frames}``
  extension — decoded, windowed and rendered; parts of one series (same SeriesInstanceUID) are
  rendered together (sorted along the slice normal) and replace the first part of the series.
- ``http(s)://…`` — refused unless the host is in ``allowed_image_domains`` (SSRF), then fetched with
  size and time limits.

Rendering runs in a thread pool so the event loop never blocks, with an in-memory LRU of renders keyed
by content hash + spec + budget (multi-turn chats resend the same images). Never on disk.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
from pydantic import ValidationError

from core.budget import PixelBudget
from core.manifest import RenderSpec
from serve.errors import APIError

_IMAGE_MIMES = {"image/png", "image/jpeg", "image/jpg", "image/webp"}
_DICOM_MIMES = {"application/dicom", "application/dicom+octet-stream"}


@dataclass
class _Part:
    msg: int
    idx: int
    kind: str  # "image" | "dicom"
    data: bytes
    spec: RenderSpec | None
    param: str
    series: str | None = None
    original_url: str | None = None
    dicom: Any = None  # core.dicom.DicomFile: the header parsed once, reused by core.render


@dataclass
class RewriteResult:
    body: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    dicom_parts: int = 0
    render_seconds: float = 0.0


class RenderCache:
    """A small thread-safe LRU of (data URLs, record) keyed by content hash + spec + budget."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[str, tuple[list[str], dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[list[str], dict[str, Any]] | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return v

    def put(self, key: str, value: tuple[list[str], dict[str, Any]]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


class ImageRewriter:
    def __init__(self, budget: PixelBudget, *, max_images: int, max_image_bytes: int, max_image_pixels: int,
                 workers: int = 2, cache_size: int = 256, allowed_domains: list[str] | None = None,
                 fetch_timeout: float = 10.0, http: httpx.AsyncClient | None = None,
                 policy: str = "refuse"):  # fmt: skip
        self.budget = budget
        self.policy = policy  # burned-in text: "refuse" or "redact" (core.render's BurnedInPolicy)
        self.max_images = max_images
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self.cache = RenderCache(cache_size)
        self.allowed_domains = [d.lower() for d in (allowed_domains or [])]
        self.fetch_timeout = fetch_timeout
        self.http = http

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ entry point
    async def rewrite(self, body: dict[str, Any]) -> RewriteResult:
        """Replace every image part of ``body["messages"]`` by rendered PNG parts (in place on a copy)."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return RewriteResult(body=body)
        parts = await self._collect(messages)
        if not parts:
            return RewriteResult(body=body)
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        # Group DICOM parts by series; plain images stay one by one.
        groups: list[list[_Part]] = []
        by_series: dict[str, list[_Part]] = {}
        for p in parts:
            if p.kind == "dicom" and p.series:
                if p.series in by_series:
                    by_series[p.series].append(p)
                    continue
                by_series[p.series] = [p]
                groups.append(by_series[p.series])
            else:
                groups.append([p])
        for g in groups:
            specs = {json.dumps(p.spec.model_dump(exclude_none=True), sort_keys=True) if p.spec else "{}" for p in g}
            if len(specs) > 1:
                raise APIError(400, "parts of one DICOM series carry different 'dicom' options; send the same options for every file of a series",
                               param=g[1].param, code="conflicting_series_options")  # fmt: skip

        n_plain = sum(1 for g in groups if g[0].kind == "image")
        if n_plain > self.max_images:
            raise APIError(400, f"too many images: {n_plain} given, at most {self.max_images} per request",
                           param="messages", code="too_many_images")  # fmt: skip
        n_dicom_groups = len(groups) - n_plain
        if n_plain + n_dicom_groups > self.max_images:
            raise APIError(400, f"too many images: {n_plain + n_dicom_groups} given, at most {self.max_images} per request",
                           param="messages", code="too_many_images")  # fmt: skip
        # Series and multi-frame files share what plain images leave, at least one each.
        spare = self.max_images - n_plain
        share = [max(1, spare // max(1, n_dicom_groups))] * n_dicom_groups

        results = []
        di = 0
        for g in groups:
            cap = None
            if g[0].kind == "dicom":
                cap, di = share[di], di + 1
            results.append(loop.run_in_executor(self.pool, self._render_group, g, cap))
        rendered = await asyncio.gather(*results)

        # Rebuild messages: the first part of a group becomes its images; the others disappear.
        replace: dict[tuple[int, int], list[dict[str, Any]]] = {}
        drop: set[tuple[int, int]] = set()
        records = []
        n_images = 0
        for g, (urls, record) in zip(groups, rendered, strict=True):
            replace.setdefault((g[0].msg, g[0].idx), []).extend(
                {"type": "image_url", "image_url": {"url": u}} for u in urls
            )
            drop.update((p.msg, p.idx) for p in g[1:])
            records.append(record)
            n_images += len(urls)
        drop -= set(replace)  # a part that also starts a group (one WADO-RS answer, several series) stays
        new_messages = []
        for mi, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), list):
                new_messages.append(m)
                continue
            content = []
            for pi, part in enumerate(m["content"]):
                if (mi, pi) in drop:
                    continue
                content.extend(replace.get((mi, pi), [part]))
            new_messages.append({**m, "content": content})
        out = {**body, "messages": new_messages}
        return RewriteResult(body=out, records=records, images=n_images, dicom_parts=sum(1 for p in parts if p.kind == "dicom"),
                             render_seconds=loop.time() - t0)  # fmt: skip

    # ------------------------------------------------------------------ parsing
    async def _collect(self, messages: list[Any]) -> list[_Part]:
        parts: list[_Part] = []
        for mi, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), list):
                continue
            for pi, part in enumerate(m["content"]):
                if not isinstance(part, dict) or part.get("type") != "image_url":
                    continue
                param = f"messages[{mi}].content[{pi}].image_url"
                iu = part.get("image_url")
                if isinstance(iu, str):
                    iu = {"url": iu}
                if not isinstance(iu, dict) or not isinstance(iu.get("url"), str):
                    raise APIError(
                        400, "image_url must be an object with a string 'url'", param=param, code="invalid_image_url"
                    )
                url: str = iu["url"]
                spec = None
                if iu.get("dicom") is not None:
                    if not isinstance(iu["dicom"], dict):
                        raise APIError(
                            400,
                            "'dicom' options must be an object",
                            param=f"{param}.dicom",
                            code="invalid_dicom_options",
                        )
                    try:
                        spec = RenderSpec.model_validate(iu["dicom"])
                    except ValidationError as e:
                        msg = "; ".join(
                            f"{'.'.join(map(str, x['loc'])) or 'dicom'}: {x['msg']}" for x in e.errors()[:3]
                        )
                        raise APIError(
                            400, f"invalid 'dicom' options: {msg}", param=f"{param}.dicom", code="invalid_dicom_options"
                        ) from None
                if url.startswith("data:"):
                    payloads = [self._decode_data_url(url, param)]
                elif url.startswith(("http://", "https://")):
                    payloads = await self._fetch(url, param)
                else:
                    raise APIError(
                        400,
                        "image_url must be a data: URL (base64) or an allowed http(s) URL",
                        param=f"{param}.url",
                        code="invalid_image_url",
                    )
                for mime, data in payloads:
                    if len(data) > self.max_image_bytes:
                        raise APIError(
                            413,
                            f"image is {len(data)} bytes, over the limit of {self.max_image_bytes}",
                            param=param,
                            code="image_too_large",
                        )
                    kind = "dicom" if (mime in _DICOM_MIMES or spec is not None) else "image"
                    if kind == "image" and mime not in _IMAGE_MIMES and mime is not None:
                        raise APIError(400, f"unsupported image type {mime!r}: use image/png, image/jpeg, image/webp or application/dicom",
                                       param=f"{param}.url", code="unsupported_image_type")  # fmt: skip
                    p = _Part(
                        mi,
                        pi,
                        kind,
                        data,
                        spec,
                        param,
                        original_url=url if kind == "image" and url.startswith("data:") else None,
                    )
                    if kind == "dicom":
                        p.series = self._series_uid(p)
                    parts.append(p)
        return parts

    def _decode_data_url(self, url: str, param: str) -> tuple[str | None, bytes]:
        header, sep, payload = url.partition(",")
        fields = header[len("data:") :].split(";")
        if not sep or "base64" not in fields[1:] or len(header) > 200:
            raise APIError(
                400,
                "image data URL must look like data:<mime>;base64,<data>",
                param=f"{param}.url",
                code="invalid_data_url",
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(
                400, "image data URL is not valid base64", param=f"{param}.url", code="invalid_base64"
            ) from None
        if not data:
            raise APIError(400, "image data URL is empty", param=f"{param}.url", code="invalid_data_url")
        return (fields[0].strip().lower() or None), data

    async def _fetch(self, url: str, param: str) -> list[tuple[str | None, bytes]]:
        """GET an allowlisted URL with size and time limits. A ``multipart/related`` answer (DICOMweb
        WADO-RS: a study or series as several DICOM instances) is split into its parts."""
        host = (urlparse(url).hostname or "").lower()
        if not self.allowed_domains or not any(host == d or host.endswith("." + d) for d in self.allowed_domains):
            raise APIError(400, f"remote image URLs are not allowed for host {host!r}; send the image as a data: URL "
                           "(or ask the operator to add the domain to INFIMED_ALLOWED_IMAGE_DOMAINS)",
                           param=f"{param}.url", code="remote_url_not_allowed")  # fmt: skip
        own = self.http is None
        client = self.http or httpx.AsyncClient()
        try:
            async with client.stream("GET", url, timeout=self.fetch_timeout, follow_redirects=False) as r:
                if r.status_code != 200:
                    raise APIError(
                        400,
                        f"fetching the image failed with HTTP {r.status_code}",
                        param=f"{param}.url",
                        code="remote_fetch_failed",
                    )
                buf = bytearray()
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    if len(buf) > self.max_image_bytes:
                        raise APIError(
                            413, "remote image is over the size limit", param=f"{param}.url", code="image_too_large"
                        )
                ctype = r.headers.get("content-type", "")
                mime = ctype.split(";")[0].strip().lower() or None
                if mime == "multipart/related":
                    return _split_multipart(ctype, bytes(buf), param)
                return [(mime, bytes(buf))]
        except httpx.HTTPError as e:
            raise APIError(
                400, f"fetching the image failed: {type(e).__name__}", param=f"{param}.url", code="remote_fetch_failed"
            ) from None
        finally:
            if own:
                await client.aclose()

    def _series_uid(self, p: _Part) -> str | None:
        """Parse the part's DICOM header (once: ``p.dicom`` goes to ``core.render`` as is) and return its series."""
        from core.dicom import DecodeLimits, parse_header
        from core.render import RenderError

        limits = DecodeLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
        try:
            p.dicom = parse_header(p.data, name=p.param, limits=limits)
        except RenderError as e:
            raise APIError(400, f"not a readable DICOM file: {_safe(e)}", param=p.param, code="invalid_dicom") from None
        ds = p.dicom.header
        uid = getattr(ds, "SeriesInstanceUID", None)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        # A multi-frame object is its own group; single-frame files of one series are grouped.
        return None if (uid is None or frames > 1) else str(uid)

    # ------------------------------------------------------------------ rendering (worker threads)
    def _render_group(self, group: list[_Part], cap: int | None) -> tuple[list[str], dict[str, Any]]:
        from core.dicom import DecodeLimits
        from core.render import RenderError, render

        spec = group[0].spec
        h = hashlib.sha256()
        for p in group:  # a DicomFile hashes its bytes once, for this key and the render record alike
            h.update(bytes.fromhex(p.dicom.sha256) if p.dicom is not None else hashlib.sha256(p.data).digest())
        key = json.dumps([h.hexdigest(), spec.model_dump(exclude_none=True) if spec else None, cap,
                          self.budget.min_pixels, self.budget.max_pixels, self.policy])  # fmt: skip
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        limits = DecodeLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
        sources = [p.dicom if p.dicom is not None else p.data for p in group]
        source: Any = sources if len(group) > 1 else sources[0]
        try:
            images, record = render(
                source, spec, self.budget, max_images=cap, policy=self.policy, limits=limits, name=group[0].param
            )
        except RenderError as e:
            code = type(e).__name__.removesuffix("Error").lower() or "render"
            msg = _safe(e)
            if code == "burnedintext" and self.policy == "refuse":
                msg += "; this server refuses such images (its administrator can enable OCR redaction: --burned-in-policy redact)"
            raise APIError(
                400, msg, param=group[0].param, code=f"{code}_error" if code != "render" else "render_error"
            ) from None
        urls = []
        for img in images:
            if group[0].kind == "image" and not record.resized and group[0].original_url is not None:
                urls.append(group[0].original_url)  # already within budget: forward as is
                continue
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=False, compress_level=1)
            urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
        value = (urls, record.model_dump(mode="json"))
        self.cache.put(key, value)
        return value


def _split_multipart(content_type: str, body: bytes, param: str) -> list[tuple[str | None, bytes]]:
    """Split a ``multipart/related`` body (DICOMweb WADO-RS, PS3.18 §8.6) into (mime, bytes) parts."""
    import email.parser
    import email.policy

    if "boundary=" not in content_type:
        raise APIError(
            400, "the remote multipart answer has no boundary", param=f"{param}.url", code="remote_fetch_failed"
        )
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = [(p.get_content_type().lower(), p.get_payload(decode=True) or b"") for p in msg.iter_parts()]
    parts = [(m, d) for m, d in parts if d]
    if not parts:
        raise APIError(
            400, "the remote multipart answer holds no instances", param=f"{param}.url", code="remote_fetch_failed"
        )
    return parts


def _safe(e: Exception) -> str:
    """The first line of a render error (its messages name the part and the problem, never data)."""
    return str(e).splitlines()[0][:500]
