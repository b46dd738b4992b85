"""Deduplication across the whole run: exact (content hashes) and near duplicates (pHash, MinHash).

- exact: same image file contents (sha256) and the same normalised text;
- near images: every image's 64-bit perceptual hash within ``phash_distance`` bits of the other sample's
  image in the same slot (candidates found by the pigeonhole trick: split the hash into d+1 chunks, two
  hashes within d bits share at least one chunk);
- near texts: MinHash (character 5-grams) Jaccard ≥ ``text_jaccard`` (candidates from ``MinHashLSH``).

``mode`` says what makes a duplicate: ``image_and_text`` (both near: the default, so the several questions
asked about one image are kept), ``image`` (pretraining captions: one image once), ``text``. In each group
the sample with the best overall score is kept (ties: the first read); the others name it in their reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from curation.recipe import Dedup


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _image_pairs(records: Sequence[dict[str, Any]], distance: int) -> set[tuple[int, int]]:
    """Pairs of positions whose first images are within ``distance`` bits (then checked on every slot)."""
    chunks = distance + 1
    bits = 64
    size = -(-bits // chunks)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for pos, r in enumerate(records):
        ims = r["images"]
        if not ims or not ims[0].get("phash"):
            continue
        v = int(ims[0]["phash"], 16)
        for c in range(chunks):
            buckets[(c, (v >> (c * size)) & ((1 << size) - 1))].append(pos)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        if len(members) < 2:
            continue
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                ra, rb = records[a]["images"], records[b]["images"]
                if len(ra) != len(rb) or (a, b) in pairs:
                    continue
                if all(
                    x.get("phash") and y.get("phash") and _hamming(x["phash"], y["phash"]) <= distance
                    for x, y in zip(ra, rb)
                ):
                    pairs.add((a, b))
    return pairs


def _text_near(records: Sequence[dict[str, Any]], cfg: Dedup) -> set[tuple[int, int]]:
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    scheme = MinHash(num_perm=cfg.minhash_perm, seed=1).scheme  # the scheme analyse.py hashed with

    lsh = MinHashLSH(threshold=cfg.text_jaccard, num_perm=cfg.minhash_perm)
    hashes: dict[int, LeanMinHash] = {}
    for pos, r in enumerate(records):
        if r.get("minhash") and len(r["minhash"]) == cfg.minhash_perm:
            mh = LeanMinHash(seed=1, hashvalues=r["minhash"], scheme=scheme)
            hashes[pos] = mh
            lsh.insert(str(pos), mh)
    pairs: set[tuple[int, int]] = set()
    for pos, mh in hashes.items():
        for other in lsh.query(mh):
            o = int(other)
            if o != pos and mh.jaccard(hashes[o]) >= cfg.text_jaccard:
                pairs.add((min(pos, o), max(pos, o)))
    return pairs


def find_duplicates(records: Sequence[dict[str, Any]], overall: Sequence[float], cfg: Dedup) -> dict[int, str]:
    """Positions to drop → reason (naming the kept sample's id). ``overall`` ranks members of a group."""
    if not cfg.enabled or len(records) < 2:
        return {}
    n = len(records)
    exact_uf, near_uf = _UnionFind(n), _UnionFind(n)
    first: dict[tuple[Any, ...], int] = {}
    for pos, r in enumerate(records):
        img_key = tuple(im.get("sha256") for im in r["images"])
        if cfg.mode == "image":
            key: tuple[Any, ...] = ("i",) + img_key
        elif cfg.mode == "text":
            key = ("t", r["text_sha"])
        else:
            key = ("it", r["text_sha"]) + img_key
        if None in key:
            continue
        if key in first:
            exact_uf.union(first[key], pos)
        else:
            first[key] = pos
    img_pairs = _image_pairs(records, cfg.phash_distance) if cfg.mode != "text" else set()
    txt_pairs = _text_near(records, cfg) if cfg.mode != "image" else set()
    if cfg.mode == "image":
        near = img_pairs
    elif cfg.mode == "text":
        near = txt_pairs
    else:
        text_only = {p for p in txt_pairs if not records[p[0]]["images"] and not records[p[1]]["images"]}
        near = (img_pairs & txt_pairs) | text_only
    for a, b in near:
        near_uf.union(a, b)

    drop: dict[int, str] = {}
    for uf, label in ((exact_uf, "exact duplicate"), (near_uf, "near-duplicate")):
        groups: dict[int, list[int]] = defaultdict(list)
        for pos in range(n):
            if pos not in drop:
                groups[uf.find(pos)].append(pos)
        for members in groups.values():
            if len(members) < 2:
                continue
            best = max(members, key=lambda p: (overall[p], -p))
            for p in members:
                if p != best:
                    drop[p] = f"{label} of {records[best]['id']}"
    return drop
