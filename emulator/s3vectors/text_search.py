"""Full-text and hybrid ranking for the S3 Vectors stand-in: analyzers, BM25 scores from the
bm25s library, and Reciprocal Rank Fusion (RRF). Request rules live in ``text_rules``.

What AWS documents (``aws-apis.md`` §2.9, the QueryVectors and TextSearchConfiguration
reference): a full-text-only query is ranked by BM25, a hybrid one by RRF of the vector search
and "a full-text search for each query text field"; ``scores`` carry the raw BM25 score of each
key a result matched, the RRF score (``fused``, hybrid only) and ``vectorDistance`` (hybrid
results that matched the vector search). A configuration without ``language`` uses "the
default standard analyzer". AWS publishes neither the analyzers, nor BM25's parameters, nor the
RRF constant, so the stand-in's scores are **not** the service's. Its choices (⚠):

- BM25: bm25s's ``lucene`` variant, as in Lucene ≥ 8 and OpenSearch:
  ``idf = ln(1 + (N − df + 0.5) / (df + 0.5))``, term weight ``tf / (tf + k1·(1 − b + b·dl/avgdl))``
  summed over the query's terms (a repeated term counts each time), ``k1 = 1.2`` and
  ``b = 0.75`` (Lucene's defaults), in float64. ``N``, ``df`` and ``avgdl`` are over the vectors
  whose value for the key has at least one term, across the whole index: a filter narrows the
  candidates, not the statistics, as in Lucene.
- Searchable values: a string, or an array of strings (searched as one text); anything else is
  not indexed. A vector matches a query text when they share at least one term.
- Standard analyzer: lowercase, then runs of word characters (``\\w``), except that each Han
  ideograph and Hiragana character is a term of its own (as Unicode word segmentation, UAX #29,
  splits them); no stop words, no stemming (Lucene's StandardAnalyzer, approximately).
- ``en fr es pt it de nl``: the standard analyzer, then that language's stop words (bm25s's
  lists, from NLTK) and its Snowball stemmer (PyStemmer).
- ``zh ja ko``: NFKC-normalized, lowercased word runs whose Han, Kana and Hangul stretches become
  overlapping bigrams (a lone character stays a unigram), like Lucene's CJKAnalyzer.
- Full-text only with several query texts: ranked by the sum of their BM25 scores.
- Hybrid: each search contributes its first ``topK`` results (vector search: the ``topK``
  nearest that pass the filter; each query text: the ``topK`` best-scoring matches that pass
  it), and ``fused = Σ 1 / (60 + rank)`` with ranks from 1 (60: Cormack et al. 2009, and the
  default of OpenSearch and Elasticsearch). A score or distance is reported for each search
  whose list holds the result. Ties go to the smaller vector key.

Why bm25s (0.3.16, with PyStemmer for stemming) rather than tantivy (0.27.0), compared here:
bm25s is a 76 KB pure-Python wheel (PyStemmer 0.7 MB) on numpy, which novaflow already has;
tantivy a 5.2 MB binary wheel (17 MB installed). Both rank deterministically and agreed on a
trial ranking, but tantivy quantizes document lengths (Lucene-style norms), scales scores by
k1 + 1 and orders ties by segment layout. bm25s's ``get_scores`` gives every document's score,
so a filtered candidate set is a numpy selection; tantivy returns top-N hits only, so
candidates must travel as a term-set query (and in the trial an int given to a u64 field
through the keyword constructor killed its writer thread). tantivy updates incrementally where
bm25s rebuilds: here a key's index is rebuilt lazily after a write, fine at the stand-in's sizes.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bm25s
import numpy as np
import Stemmer

# bm25s logs each index it builds at DEBUG; the stand-in runs inside novaflow's process too.
logging.getLogger("bm25s").setLevel(logging.WARNING)

if TYPE_CHECKING:
    from emulator.s3vectors.filters import MetadataFilter
    from emulator.s3vectors.search import IndexMatrix
    from emulator.s3vectors.text_rules import QueryText

K1 = 1.2
B = 0.75
BM25_METHOD = "lucene"
RRF_RANK_CONSTANT = 60

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_HAN_AND_HIRAGANA = _HAN + "\u3040-\u309f"
_CJK = _HAN_AND_HIRAGANA + "\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f\u1100-\u11ff\u3130-\u318f"
_CJK += "\uac00-\ud7af"
# Word characters grouped into terms, but each Han ideograph or Hiragana character alone.
STANDARD_TOKEN_PATTERN = rf"(?u)[^\W{_HAN_AND_HIRAGANA}]+|[{_HAN_AND_HIRAGANA}]"
# (bm25s stop-word list, PyStemmer algorithm) of each language analyzed word by word.
LANGUAGE_ANALYSIS: Mapping[str, tuple[str, str]] = {
    "en": ("en", "english"),
    "fr": ("fr", "french"),
    "es": ("es", "spanish"),
    "pt": ("pt", "portuguese"),
    "it": ("it", "italian"),
    "de": ("de", "german"),
    "nl": ("nl", "dutch"),
}
CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})

_WORD = re.compile(r"\w+")
_CJK_OR_NOT = re.compile(rf"([{_CJK}]+)|([^{_CJK}]+)")
_stemmers: dict[str, Any] = {}


def _stemmer(algorithm: str) -> Any:
    if algorithm not in _stemmers:
        _stemmers[algorithm] = Stemmer.Stemmer(algorithm)
    return _stemmers[algorithm]


def _cjk_terms(text: str) -> list[str]:
    terms: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        for cjk, other in _CJK_OR_NOT.findall(word):
            if other:
                terms.append(other)
            elif len(cjk) == 1:
                terms.append(cjk)
            else:
                terms.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return terms


def analyze(texts: Sequence[str], language: str | None) -> list[list[str]]:
    """The terms of each of ``texts`` under the analyzer of ``language`` (None: standard)."""
    if not texts:
        return []
    if language in CJK_LANGUAGES:
        return [_cjk_terms(text) for text in texts]
    stopwords: str | None = None
    stemmer = None
    if language is not None:
        stopwords, algorithm = LANGUAGE_ANALYSIS[language]
        stemmer = _stemmer(algorithm)
    terms: list[list[str]] = bm25s.tokenize(
        list(texts),
        lower=True,
        token_pattern=STANDARD_TOKEN_PATTERN,
        stopwords=stopwords,
        stemmer=stemmer,
        return_ids=False,
        show_progress=False,
    )
    return terms


def new_bm25() -> bm25s.BM25:
    """An empty bm25s model with the stand-in's parameters (``K1``, ``B``, lucene, float64)."""
    return bm25s.BM25(k1=K1, b=B, method=BM25_METHOD, dtype="float64")


def searchable_text(value: Any) -> str | None:
    """The text a metadata value contributes to full-text search, or None if it has none."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


class TextIndex:
    """BM25 over one searchable key of one index: ``rows`` are the matrix rows of the vectors
    whose value for the key has at least one term, in bm25s's document order."""

    def __init__(self, matrix: IndexMatrix, metadata_key: str, language: str | None) -> None:
        self.language = language
        candidates = [
            (row, text)
            for row, metadata in enumerate(matrix.metadata)
            if (text := searchable_text(metadata.get(metadata_key))) is not None
        ]
        analyzed = analyze([text for _, text in candidates], language)
        kept = [(row, terms) for (row, _), terms in zip(candidates, analyzed, strict=True) if terms]
        self.rows = np.asarray([row for row, _ in kept], dtype=np.int64)
        self._bm25: bm25s.BM25 | None = None
        if kept:
            self._bm25 = new_bm25()
            self._bm25.index([terms for _, terms in kept], show_progress=False)

    def scores(self, text: str) -> np.ndarray:
        """The BM25 score of each of ``rows`` for the query ``text`` (0 where no term matches)."""
        terms = analyze([text], self.language)[0]
        if self._bm25 is None or not terms:
            return np.zeros(len(self.rows))
        return np.asarray(self._bm25.get_scores(terms), dtype=np.float64)


def text_index(matrix: IndexMatrix, metadata_key: str, language: str | None) -> TextIndex:
    """The BM25 index of ``metadata_key``, built when first needed after the matrix changed."""
    cache_key = (metadata_key, language)
    found = matrix.text_indexes.get(cache_key)
    if not isinstance(found, TextIndex):
        found = TextIndex(matrix, metadata_key, language)
        matrix.text_indexes[cache_key] = found
    return found


@dataclass(frozen=True)
class TextMatches:
    """The rows one query text matched that pass the filter, best first: ``rows[i]`` has BM25
    score ``scores[i]`` (> 0) for ``metadata_key``; ties are ordered by vector key."""

    metadata_key: str
    rows: list[int]
    scores: list[float]


def text_matches(
    matrix: IndexMatrix, query: QueryText, metadata_filter: MetadataFilter | None
) -> TextMatches:
    """Every vector of ``matrix`` that ``query`` matches and ``metadata_filter`` keeps, ranked."""
    index = text_index(matrix, query.metadata_key, query.config.language)
    scores = index.scores(query.text)
    matched = np.nonzero(scores > 0)[0]
    pairs = [(float(scores[i]), int(index.rows[i])) for i in matched.tolist()]
    if metadata_filter is not None:
        pairs = [pair for pair in pairs if metadata_filter.matches(matrix.metadata[pair[1]])]
    pairs.sort(key=lambda pair: (-pair[0], matrix.keys[pair[1]]))
    return TextMatches(query.metadata_key, [row for _, row in pairs], [s for s, _ in pairs])


def reciprocal_rank_fusion(
    rankings: Iterable[Sequence[str]], constant: int = RRF_RANK_CONSTANT
) -> dict[str, float]:
    """RRF score of every key in ``rankings`` (each best first): Σ 1 / (constant + rank)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (constant + rank)
    return fused


@dataclass(frozen=True)
class Hit:
    """One QueryVectors result: ``distance`` when it matched the vector search, ``bm25`` the
    (metadataKey, score) of each query text it matched, ``fused`` its RRF score (hybrid)."""

    key: str
    metadata: Mapping[str, Any]
    distance: float | None = None
    bm25: tuple[tuple[str, float], ...] = ()
    fused: float | None = None

    def to_document(
        self, *, with_distance: bool, with_metadata: bool, with_scores: bool, full_text: bool
    ) -> dict[str, Any]:
        """The result as QueryVectors returns it. ``scores`` appear only for ``full_text``
        (full-text-only or hybrid) queries, as the model says returnScores adds none to
        vector-only requests."""
        document: dict[str, Any] = {"key": self.key}
        if with_distance and self.distance is not None:
            document["distance"] = self.distance
        if with_scores and full_text:
            scores: dict[str, Any] = {}
            if self.fused is not None:
                scores["fused"] = self.fused
            if self.bm25:
                scores["bm25Scores"] = [{"metadataKey": k, "score": s} for k, s in self.bm25]
            if self.fused is not None and self.distance is not None:
                scores["vectorDistance"] = self.distance
            document["scores"] = scores
        if with_metadata:
            document["metadata"] = dict(self.metadata)
        return document


def full_text_hits(matrix: IndexMatrix, matches: Sequence[TextMatches], top_k: int) -> list[Hit]:
    """The ``top_k`` best of a full-text-only query, ranked by the sum of BM25 scores."""
    totals: dict[int, float] = {}
    per_row: dict[int, list[tuple[str, float]]] = {}
    for found in matches:
        for row, score in zip(found.rows, found.scores, strict=True):
            totals[row] = totals.get(row, 0.0) + score
            per_row.setdefault(row, []).append((found.metadata_key, score))
    ranked = sorted(totals, key=lambda row: (-totals[row], matrix.keys[row]))[:top_k]
    return [Hit(matrix.keys[r], matrix.metadata[r], bm25=tuple(per_row[r])) for r in ranked]


def hybrid_hits(
    matrix: IndexMatrix,
    nearest: Sequence[tuple[str, float]],
    matches: Sequence[TextMatches],
    top_k: int,
) -> list[Hit]:
    """The ``top_k`` best of a hybrid query by RRF of ``nearest`` ((key, distance), nearest
    first, at most ``top_k``) and the first ``top_k`` of each query text's ``matches``."""
    windows = []
    for found in matches:
        firsts = zip(found.rows[:top_k], found.scores[:top_k], strict=True)
        windows.append([(matrix.keys[row], found.metadata_key, score) for row, score in firsts])
    fused = reciprocal_rank_fusion(
        [[key for key, _ in nearest], *[[key for key, _, _ in window] for window in windows]]
    )
    distances = dict(nearest)
    bm25: dict[str, list[tuple[str, float]]] = {}
    for window in windows:
        for key, metadata_key, score in window:
            bm25.setdefault(key, []).append((metadata_key, score))
    ranked = sorted(fused, key=lambda key: (-fused[key], key))[:top_k]
    return [
        Hit(
            key,
            matrix.metadata[matrix.row_of[key]],
            distance=distances.get(key),
            bm25=tuple(bm25.get(key, ())),
            fused=fused[key],
        )
        for key in ranked
    ]
