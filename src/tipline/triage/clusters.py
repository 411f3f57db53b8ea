"""Near-duplicate clustering: items joined when they share a SHA-256 or their PDQ hashes are
within a threshold: connected components of the graph whose edges are the radius neighbours
found with the Hamming index, so a million items cluster in minutes, and every pair within the
threshold is joined (the index is exact: no pair is missed the way approximate
nearest-neighbour search would miss it).

The review queue shows each cluster once: an analyst grades the representative and the grade
applies to the whole cluster.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tipline.index.hamming import HammingIndex, codes_from_hex
from tipline.index.mih import default_index
from tipline.record import ItemRecord

Edges = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def _components(n: int, edges: list[Edges]) -> npt.NDArray[np.int32]:
    """Connected-component label of each of ``n`` items (scipy's C implementation: tens of
    millions of edges in seconds, where a Python union-find loop would take minutes)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, dtype=np.int64)
    b = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _count, labels = connected_components(graph, directed=False)
    out: npt.NDArray[np.int32] = labels.astype(np.int32)
    return out


@dataclass(slots=True)
class ClusterMember:
    path: str
    sha256: str | None
    pdq: str | None
    #: Hamming distance of this member's PDQ to the representative's (None without PDQ)
    distance: int | None
    exact: bool  # same SHA-256 as the representative


@dataclass(slots=True)
class Cluster:
    id: int
    representative: str
    members: list[ClusterMember] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.id,
            "size": self.size,
            "representative": self.representative,
            "max_distance": max((m.distance or 0 for m in self.members), default=0),
            "members": [
                {
                    "path": m.path,
                    "sha256": m.sha256,
                    "pdq": m.pdq,
                    "distance": m.distance,
                    "exact_duplicate": m.exact,
                }
                for m in self.members
            ],
        }


IndexFactory = Callable[[], HammingIndex]

# Set before forking the pool; read by workers (shared copy-on-write).
_INDEX: HammingIndex | None = None
_QUERIES: npt.NDArray[np.uint8] | None = None
_RADIUS = 0
_N_CODES = 0


def _code_of_query(q: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Query rows 0..C-1 are the codes themselves; dihedral variants follow, 7 per code."""
    out: npt.NDArray[np.int64] = np.where(q < _N_CODES, q, (q - _N_CODES) // 7)
    return out


def _neighbours(span: tuple[int, int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(code, neighbour code) pairs for the query rows in ``span``, self-pairs dropped."""
    assert _INDEX is not None and _QUERIES is not None
    lo, hi = span
    left: list[npt.NDArray[np.int64]] = []
    right: list[npt.NDArray[np.int64]] = []
    for row, (ids, _d) in enumerate(_INDEX.search(_QUERIES[lo:hi], _RADIUS), start=lo):
        own = int(_code_of_query(np.asarray([row], dtype=np.int64))[0])
        # the "within T" relation is symmetric: a code's own row reports only larger ids
        keep = (ids[ids > own] if row < _N_CODES else ids[ids != own]).astype(np.int64)
        if len(keep):
            left.append(np.full(len(keep), own, dtype=np.int64))
            right.append(keep)
    if not left:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(left), np.concatenate(right)


def cluster_records(
    records: Sequence[ItemRecord],
    threshold: int = 31,
    *,
    use_dihedral: bool = False,
    jobs: int = 1,
    index_factory: IndexFactory | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Cluster]:
    """Group ``records`` into clusters, largest first. Items without a usable PDQ join only by
    SHA-256; items with neither are singletons."""
    global _INDEX, _QUERIES, _RADIUS, _N_CODES
    n = len(records)
    edges: list[Edges] = []
    # exact duplicates, and identical PDQ hashes (collapsed before the radius search)
    first_by_sha: dict[str, int] = {}
    code_of: dict[str, int] = {}
    code_items: list[int] = []
    dup_a: list[int] = []
    dup_b: list[int] = []
    for i, r in enumerate(records):
        if r.sha256:
            j = first_by_sha.setdefault(r.sha256, i)
            if j != i:
                dup_a.append(j)
                dup_b.append(i)
        if r.pdq and r.pdq_usable:
            c = code_of.get(r.pdq)
            if c is None:
                code_of[r.pdq] = len(code_items)
                code_items.append(i)
            else:
                dup_a.append(code_items[c])
                dup_b.append(i)
    edges.append((np.asarray(dup_a, dtype=np.int64), np.asarray(dup_b, dtype=np.int64)))
    hexes = list(code_of)
    if hexes and threshold >= 0:
        codes = codes_from_hex(hexes)
        index = (index_factory or default_index)()
        index.add(np.arange(len(hexes), dtype=np.int64), codes)
        queries = codes
        if use_dihedral:
            # rows C + 7c .. C + 7c + 6: the 7 rotations/flips of code c
            flat = []
            for c, h in enumerate(hexes):
                variants = records[code_items[c]].pdq_dihedral
                flat.extend(variants[1:8] if variants and len(variants) == 8 else [h] * 7)
            queries = np.concatenate([codes, codes_from_hex(flat)])
        _INDEX, _QUERIES, _RADIUS, _N_CODES = index, queries, threshold, len(hexes)
        step = 2048
        spans = [(lo, min(lo + step, len(queries))) for lo in range(0, len(queries), step)]
        item_of_code = np.asarray(code_items, dtype=np.int64)

        def collect(res: Edges) -> None:
            if len(res[0]):
                edges.append((item_of_code[res[0]], item_of_code[res[1]]))
            if progress:
                progress(len(res[0]))

        try:
            if jobs > 1 and len(spans) > 1:
                ctx = multiprocessing.get_context("fork")
                with ctx.Pool(jobs) as pool:
                    for res in pool.imap_unordered(_neighbours, spans):
                        collect(res)
            else:
                for span in spans:
                    collect(_neighbours(span))
        finally:
            _INDEX = _QUERIES = None
    edges.extend(_video_edges(records, threshold))
    return _build_clusters(records, _components(n, edges))


def _video_edges(records: Sequence[ItemRecord], threshold: int) -> list[Edges]:
    """Videos join when their vPDQ hashes match one way or the other (a copy and its
    original; a clip and the video it was cut from), frames within ``threshold``."""
    from tipline.errors import InvalidSignalError
    from tipline.index.vpdq import duplicate_pairs
    from tipline.signals.vpdq import VpdqHash, VpdqMatchOptions

    videos: list[int] = []
    hashes: list[VpdqHash | None] = []
    for i, r in enumerate(records):
        if r.vpdq:
            try:
                hashes.append(VpdqHash.from_strings(r.vpdq))
            except InvalidSignalError:
                continue
            videos.append(i)
    if len(videos) < 2 or threshold < 0:
        return []
    pairs = list(duplicate_pairs(hashes, VpdqMatchOptions(distance=threshold)))
    a = np.asarray([videos[x] for x, _ in pairs], dtype=np.int64)
    b = np.asarray([videos[y] for _, y in pairs], dtype=np.int64)
    return [(a, b)]


def _build_clusters(records: Sequence[ItemRecord], labels: npt.NDArray[np.int32]) -> list[Cluster]:
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, []).append(i)

    def rank(i: int) -> tuple[int, int, str]:
        r = records[i]
        return (-(r.pdq_quality or 0), -(r.size or 0), r.path)

    ordered = sorted(groups.values(), key=lambda g: (-len(g), records[g[0]].path))
    clusters = []
    for cid, members in enumerate(ordered, start=1):
        rep = records[min(members, key=rank)]
        rep_int = int(rep.pdq, 16) if rep.pdq else None
        out = Cluster(cid, rep.path)
        for i in sorted(members, key=lambda i: records[i].path):
            r = records[i]
            dist = None
            if rep_int is not None and r.pdq:
                dist = (rep_int ^ int(r.pdq, 16)).bit_count()
            out.members.append(
                ClusterMember(
                    r.path, r.sha256, r.pdq, dist, bool(r.sha256) and r.sha256 == rep.sha256
                )
            )
        clusters.append(out)
    return clusters
