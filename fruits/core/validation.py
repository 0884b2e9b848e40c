"""Checks a run must pass before its batch is committed, on the outputs as stored in S3.

Everything is streamed: parquet record batches of at most `parquet_stream.STREAM_ROWS` rows
read with pyarrow through the S3 hook (ranged GETs, no Spark), checked and dropped. What is
kept is bounded by the batch being committed (its manifest's paths), never by the history:
  - the batch's features and rejects: every manifest image exactly once, every vector of the
    right length and finite;
  - the PCA output of the run: when it projected the new batch only, that batch's vectors and
    the vectors list (the previous list + this batch); when it refitted, every dataset of its
    list, one at a time (the run itself read them all then).
The same task validates local and EMR runs. Every failed check names what differs and by how much.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fruits.contract import PcaOutputs
from fruits.core import parquet_stream
from fruits.errors import PermanentError


class ValidationError(PermanentError):
    """The outputs of a run are not what its inputs promise."""


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ValidationError("validation failed: " + "; ".join(self.problems))


def _sample(items, n: int = 3) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


@dataclass
class VectorChecks:
    """Counts over a stream of list<float> chunks: rows, missing vectors, wrong lengths, non-finite values."""

    dim: int
    rows: int = 0
    nulls: int = 0
    wrong_length: int = 0
    lengths_found: set = field(default_factory=set)
    not_finite: int = 0
    largest_chunk: int = 0  # rows of the largest chunk seen: the streaming bound, for tests

    def add(self, vectors) -> None:
        import pyarrow.compute as pc

        self.rows += len(vectors)
        self.largest_chunk = max(self.largest_chunk, len(vectors))
        self.nulls += vectors.null_count
        lengths = np.asarray(pc.list_value_length(vectors).fill_null(-1))
        wrong = lengths != self.dim
        self.wrong_length += int(np.count_nonzero(wrong))
        if len(self.lengths_found) < 5:
            self.lengths_found.update(lengths[wrong].tolist())
        # in Arrow, on the values as stored: no float64 copy of the chunk (a null value is not finite)
        values = pc.list_flatten(vectors)
        finite = pc.sum(pc.is_finite(values)).as_py() or 0  # a boolean sum counts the true values
        self.not_finite += len(values) - finite

    def report(self, what: str, findings: Findings) -> None:
        findings.check(self.nulls == 0, f"{what}: {self.nulls} row(s) have no vector")
        if self.wrong_length:
            found = sorted(self.lengths_found)[:5]
            findings.check(
                False,
                f"{what}: {self.wrong_length} of {self.rows} vectors do not have {self.dim} "
                f"values (found lengths {found})",
            )
        findings.check(self.not_finite == 0, f"{what}: {self.not_finite} non-finite value(s) (NaN or infinity)")


@dataclass
class Scan:
    """What one streamed dataset held: its paths (batch-sized) and the checks of its vectors."""

    paths: list[str]
    vectors: VectorChecks | None
    reasons: Counter = field(default_factory=Counter)

    @property
    def rows(self) -> int:
        return len(self.paths)


def scan(bucket, prefix: str, *, vector_column: str | None, dim: int = 0, reason_column: str | None = None) -> Scan:
    """Stream one dataset (one batch's): its paths kept, reasons counted, vectors checked and
    dropped batch by batch (FileNotFoundError when it has no parquet file)."""
    columns = ["path"] + ([vector_column] if vector_column else []) + ([reason_column] if reason_column else [])
    result = Scan(paths=[], vectors=VectorChecks(dim) if vector_column else None)
    for batch in parquet_stream.iter_batches(bucket, prefix, columns):
        result.paths.extend(batch.column("path").to_pylist())
        if vector_column:
            result.vectors.add(batch.column(vector_column))
        if reason_column:
            result.reasons.update(_reason_kind(r) for r in batch.column(reason_column).to_pylist())
    return result


def _reason_kind(reason: str | None) -> str:
    """Group reasons for the report ('cannot decode image: <detail>' -> 'cannot decode image')."""
    return (reason or "").split(":", 1)[0]


def check_batch(manifest_uris: list[str], featured: list[str], rejected: list[str], findings: Findings) -> None:
    """features + rejects hold every manifest entry exactly once, and nothing else."""
    total = len(featured) + len(rejected)
    findings.check(
        total == len(manifest_uris),
        f"features rows ({len(featured)}) + rejects rows ({len(rejected)}) = {total}, but the "
        f"manifest lists {len(manifest_uris)} images (difference {total - len(manifest_uris):+d})",
    )
    seen = Counter(featured) + Counter(rejected)
    duplicated = {p for p, n in seen.items() if n > 1}
    expected = set(manifest_uris)
    missing = expected - seen.keys()
    extra = seen.keys() - expected
    findings.check(not duplicated, f"{len(duplicated)} image(s) appear more than once: {_sample(duplicated)}")
    findings.check(not missing, f"{len(missing)} manifest image(s) are in neither output: {_sample(missing)}")
    findings.check(not extra, f"{len(extra)} output row(s) are not in the manifest: {_sample(extra)}")


# ----------------------------------------------------------------------------- PCA


@dataclass
class PcaCheck:
    """What validation learnt of the PCA output: rows in the space, rows read, datasets read."""

    rows: int
    rows_read: int
    datasets_read: int
    largest_chunk: int


def _read_list(bucket, uri: str) -> list[str] | None:
    key = bucket.key_of(uri)
    if not bucket.exists(key):
        return None
    return [line.strip() for line in bucket.read_text(key).splitlines() if line.strip()]


def check_pca(
    bucket,
    outputs: PcaOutputs,
    report: dict,
    *,
    batch_id: str,
    committed_rows: int,
    featured: list[str],
    previous: dict | None,
    findings: Findings,
) -> PcaCheck:
    """The run's vectors against the batch and the committed state, streamed.

    Project mode: the list is the previous one plus this batch's dataset, and only that dataset
    is read (its paths must be the batch's features, once each). Refit mode: every listed dataset
    is this run's, each read once with its paths unique, and together they hold every committed
    row plus the batch. A report from before incremental PCA (no `mode`) has one vectors folder.
    """
    k = int(report["k"])
    expected_rows = committed_rows + len(featured)
    mode = report.get("mode")
    findings.check(
        int(report["rows"]) == expected_rows,
        f"PCA report says {report['rows']} rows, committed features rows + this batch make {expected_rows}",
    )
    own = outputs.vectors + f"/batch={batch_id}/"
    if mode is None:
        datasets = [outputs.vectors + "/"]
    else:
        datasets = _read_list(bucket, outputs.vectors_list)
        if datasets is None:
            findings.check(False, f"no vectors list at {outputs.vectors_list}")
            return PcaCheck(0, 0, 0, 0)
    if mode == "project":
        previous_list = _read_list(bucket, previous["vectors_list"]) if previous else None
        findings.check(
            previous is not None and previous_list is not None,
            "the PCA run projected into the previous space, but the ledger has no previous PCA state",
        )
        findings.check(
            previous is None or report.get("space_id") == previous.get("space_id"),
            f"the PCA run projected into space {report.get('space_id')!r}, the committed space is "
            f"{(previous or {}).get('space_id')!r}",
        )
        expected_list = (previous_list or []) + ([own] if featured else [])
        findings.check(
            datasets == expected_list,
            f"the vectors list {outputs.vectors_list} is not the previous list plus {own} "
            f"({len(datasets)} dataset(s), expected {len(expected_list)})",
        )
        to_read = [own] if featured else []
    else:
        foreign = [uri for uri in datasets if not uri.startswith(outputs.vectors + "/")]
        findings.check(not foreign, f"a refitted space lists datasets of other runs: {_sample(foreign)}")
        to_read = datasets
    total = rows_read = largest = 0
    vectors = VectorChecks(k)
    for uri in to_read:
        key = bucket.key_of(uri)
        try:
            part = scan(bucket, key, vector_column="pca_features", dim=k)
        except FileNotFoundError as exc:
            findings.check(False, str(exc))
            continue
        for name in ("rows", "nulls", "wrong_length", "not_finite"):
            setattr(vectors, name, getattr(vectors, name) + getattr(part.vectors, name))
        vectors.lengths_found |= part.vectors.lengths_found
        largest = max(largest, part.vectors.largest_chunk)
        rows_read += part.rows
        duplicated = part.rows - len(set(part.paths))
        findings.check(duplicated == 0, f"PCA dataset {uri} has {duplicated} duplicated path(s)")
        if uri in (own, outputs.vectors + "/") and mode is not None:
            findings.check(
                set(part.paths) == set(featured),
                f"PCA dataset {uri} does not hold exactly the batch's {len(featured)} featurized "
                f"images ({len(set(part.paths) - set(featured))} extra, "
                f"{len(set(featured) - set(part.paths))} missing)",
            )
    total = rows_read if mode != "project" else int(report["rows"])
    if mode != "project":
        findings.check(
            rows_read == expected_rows,
            f"PCA rows ({rows_read}) != committed features rows + this batch ({expected_rows}) "
            f"(difference {rows_read - expected_rows:+d})",
        )
    else:
        findings.check(
            rows_read == len(featured),
            f"PCA rows of this batch ({rows_read}) != its features rows ({len(featured)}) "
            f"(difference {rows_read - len(featured):+d})",
        )
    vectors.report(f"PCA (k={k})", findings)
    return PcaCheck(total, rows_read, len(to_read), largest)
