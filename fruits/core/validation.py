"""Checks a run must pass before its batch is committed, on the outputs as stored in S3.

Reads parquet footers and columns with pyarrow through the S3 hook (no Spark), so the same
task validates local and EMR runs. Every failed check names what differs and by how much.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fruits.contract import FEATURE_DIM


class ValidationError(Exception):
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


def check_vectors(table, column: str, dim: int, what: str, findings: Findings) -> None:
    """Every row's vector has exactly `dim` finite values."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return
    vectors = table.column(column).combine_chunks()
    nulls = vectors.null_count
    findings.check(nulls == 0, f"{what}: {nulls} row(s) have no vector")
    lengths = np.asarray(pc.list_value_length(vectors).fill_null(-1))
    wrong = int(np.count_nonzero(lengths != dim))
    if wrong:
        found = sorted(set(lengths[lengths != dim].tolist()))[:5]
        findings.check(False, f"{what}: {wrong} of {table.num_rows} vectors do not have {dim} values "
                              f"(found lengths {found})")
    values = np.asarray(pc.list_flatten(vectors).to_numpy(zero_copy_only=False), dtype=np.float64)
    not_finite = int(np.count_nonzero(~np.isfinite(values)))
    findings.check(not_finite == 0, f"{what}: {not_finite} non-finite value(s) (NaN or infinity)")


def check_batch(manifest_uris: list[str], features, rejects, findings: Findings,
                features_dim: int = FEATURE_DIM) -> None:
    """features + rejects hold every manifest entry exactly once, and nothing else."""
    featured = features.column("path").to_pylist()
    rejected = rejects.column("path").to_pylist()
    total = len(featured) + len(rejected)
    findings.check(total == len(manifest_uris),
                   f"features rows ({len(featured)}) + rejects rows ({len(rejected)}) = {total}, but the "
                   f"manifest lists {len(manifest_uris)} images (difference {total - len(manifest_uris):+d})")
    seen = Counter(featured) + Counter(rejected)
    duplicated = {p for p, n in seen.items() if n > 1}
    expected = set(manifest_uris)
    missing = expected - seen.keys()
    extra = seen.keys() - expected
    findings.check(not duplicated, f"{len(duplicated)} image(s) appear more than once: {_sample(duplicated)}")
    findings.check(not missing, f"{len(missing)} manifest image(s) are in neither output: {_sample(missing)}")
    findings.check(not extra, f"{len(extra)} output row(s) are not in the manifest: {_sample(extra)}")
    check_vectors(features, "features", features_dim, "features", findings)


def check_pca(pca, expected_rows: int, k: int, findings: Findings) -> None:
    findings.check(pca.num_rows == expected_rows,
                   f"PCA rows ({pca.num_rows}) != committed features rows + this batch ({expected_rows}) "
                   f"(difference {pca.num_rows - expected_rows:+d})")
    paths = pca.column("path").to_pylist()
    duplicated = len(paths) - len(set(paths))
    findings.check(duplicated == 0, f"PCA output has {duplicated} duplicated path(s)")
    check_vectors(pca, "pca_features", k, f"PCA (k={k})", findings)
