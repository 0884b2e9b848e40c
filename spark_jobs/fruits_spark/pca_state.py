"""What an incremental PCA keeps between runs, and when it refits (numpy and pyarrow only).

A run leaves, beside its report, everything the next run needs so that it scans only its new
batch:

    moments.npz       cumulative moments (rows, mean, scatter) of every distinct content fitted
                      so far; they merge exactly (`moments.Moments.merge`)
    basis.npz         the current space: its id, the mean and the k components every vector of
                      the space was projected with
    contents.bin      the fitted contents, sorted 16-byte prefixes of their sha256: a content
                      seen before does not weigh twice (a re-landed or copied image)
    vectors_list.txt  the vector datasets of the space, one a line: every batch's vectors,
                      all projected with basis.npz

The refit policy (`decide`) compares the current basis with the top-k subspace of the merged
moments: the largest principal angle between the two. Under the threshold only the new batch is
projected, with the current basis; above it (or when k must change, or there is no model yet,
or a refit is requested) the merged moments are eigendecomposed again and every batch is
re-projected into a new space. Nothing is approximate: the merged moments are those of all
the distinct data, so a refit gives the vectors a fit from scratch would give.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np

from fruits_spark import interface
from fruits_spark.moments import Moments

# Defined in the interface, which the DAG reads too (fruits.contract, fruits.core.pca_policy).
MOMENTS, BASIS = interface.PCA_MOMENTS, interface.PCA_BASIS
CONTENTS, VECTORS_LIST = interface.PCA_CONTENTS, interface.PCA_VECTORS_LIST
DEFAULT_REFIT_ANGLE = interface.PCA_REFIT_ANGLE  # degrees
REFIT_CHOICES = interface.PCA_REFIT_CHOICES
DIGEST_BYTES = 16  # 128 bits of the sha256: collisions are out of reach at any realistic volume


# ----------------------------------------------------------------------------- contents


def digests(hex_hashes) -> np.ndarray:
    """Sorted distinct 16-byte digests (dtype S16) of sha256 hex strings (None left out)."""
    values = [bytes.fromhex(h[: 2 * DIGEST_BYTES]) for h in hex_hashes if h]
    return np.unique(np.array(values, dtype=f"S{DIGEST_BYTES}")) if values else empty_digests()


def empty_digests() -> np.ndarray:
    return np.array([], dtype=f"S{DIGEST_BYTES}")


def digests_from_bytes(data: bytes) -> np.ndarray:
    if len(data) % DIGEST_BYTES:
        raise ValueError(f"a contents index has {len(data)} bytes, not a multiple of {DIGEST_BYTES}")
    return np.frombuffer(data, dtype=f"S{DIGEST_BYTES}").copy()


def digests_to_bytes(index: np.ndarray) -> bytes:
    return np.ascontiguousarray(index, dtype=f"S{DIGEST_BYTES}").tobytes()


def to_hex(index: np.ndarray) -> list[str]:
    """The digests as the 32 hex characters that start their sha256 (what Spark compares)."""
    rows = np.frombuffer(digests_to_bytes(index), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
    return [bytes(row).hex() for row in rows]


def novel(candidates: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The candidates (sorted, distinct) that the index does not hold yet."""
    if not len(index) or not len(candidates):
        return candidates
    return candidates[~np.isin(candidates, index, assume_unique=True)]


def union(index: np.ndarray, new: np.ndarray) -> np.ndarray:
    return np.union1d(index, new).astype(f"S{DIGEST_BYTES}") if len(new) else index


# ----------------------------------------------------------------------------- files


def moments_to_bytes(stats: Moments) -> bytes:
    buffer = io.BytesIO()
    dim = 0 if stats.mean is None else len(stats.mean)
    np.savez(
        buffer,
        rows=np.int64(stats.rows),
        mean=np.zeros(dim) if stats.mean is None else stats.mean,
        scatter=np.zeros((dim, dim)) if stats.scatter is None else stats.scatter,
    )
    return buffer.getvalue()


def moments_from_bytes(data: bytes) -> Moments:
    with np.load(io.BytesIO(data)) as saved:
        rows = int(saved["rows"])
        if not rows:
            return Moments()
        mean, scatter = saved["mean"], saved["scatter"]
        dim = len(mean)
        return Moments(rows=rows, min_dim=dim, max_dim=dim, mean=mean, scatter=scatter)


@dataclass
class Basis:
    """A space: every vector in it is (x - mean) @ components."""

    space_id: str
    mean: np.ndarray
    components: np.ndarray  # d x k, orthonormal columns

    @property
    def k(self) -> int:
        return int(self.components.shape[1])

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])


def basis_to_bytes(basis: Basis) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, space_id=np.array(basis.space_id), mean=basis.mean, components=basis.components)
    return buffer.getvalue()


def basis_from_bytes(data: bytes) -> Basis | None:
    with np.load(io.BytesIO(data)) as saved:
        basis = Basis(str(saved["space_id"]), saved["mean"], saved["components"])
    return basis if basis.k else None


def vectors_list_text(uris: list[str]) -> str:
    return "".join(uri + "\n" for uri in uris)


def vectors_list_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def batch_id_of(uri: str, fallback: str) -> str:
    """`<id>` of a dataset folder named `batch=<id>` (the layout's), else `fallback`."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name[len("batch=") :] if name.startswith("batch=") and len(name) > len("batch=") else fallback


# ----------------------------------------------------------------------------- policy


def max_principal_angle_degrees(current: np.ndarray, other: np.ndarray) -> float:
    """Largest principal angle between the column spaces of two orthonormal d x k matrices.

    From both its cosine (smallest singular value of U^T V) and its sine (largest of the part of V
    outside U): arccos alone loses small angles to rounding.
    """
    if not current.shape[1] or not other.shape[1]:
        return 0.0
    cosine = np.linalg.svd(current.T @ other, compute_uv=False).min()
    sine = np.linalg.norm(other - current @ (current.T @ other), ord=2)
    return float(np.degrees(np.arctan2(sine, cosine)))


def captured_ratios(components: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Share of the total variance of `covariance` along each column of `components`."""
    total = float(np.trace(covariance))
    if total <= 0:
        return np.zeros(components.shape[1])
    return np.einsum("ij,ij->j", components, covariance @ components) / total


@dataclass
class Decision:
    refit: bool
    reason: str
    requested: str  # auto, always or never
    k: int  # the space's k after this run
    max_angle_degrees: float | None  # current basis vs the merged top-k (None: no current basis)
    threshold_degrees: float
    variance_kept: float | None  # share of the merged variance the current basis keeps

    def to_dict(self) -> dict:
        return {"mode": "refit" if self.refit else "project", **asdict(self)}


class PolicyError(ValueError):
    """A request the previous state cannot honour (`never` without a model, another dimension)."""


def decide(
    *,
    current: Basis | None,
    covariance: np.ndarray,
    ratios,
    components: np.ndarray,
    k_requested: int | None,
    variance_target: float | None,
    requested: str = "auto",
    threshold_degrees: float = DEFAULT_REFIT_ANGLE,
) -> Decision:
    """Refit or project only, from the merged moments' eigendecomposition (`ratios`, `components`).

    Refit when: there is no model yet; it is requested; `k_requested` differs from the current
    k; the current k no longer reaches `variance_target` on the merged data; or the top-k
    subspace of the merged data is more than `threshold_degrees` away from the current one.
    """
    from fruits_spark.pca_report import smallest_k_for_variance

    if requested not in REFIT_CHOICES:
        raise PolicyError(f"refit must be one of {', '.join(REFIT_CHOICES)}, not {requested!r}")
    new_k = int(k_requested) if k_requested else smallest_k_for_variance(list(ratios), variance_target)
    angle = kept = None
    reasons = []
    if current is None:
        reasons.append("no model yet")
    elif current.dim != covariance.shape[0]:
        raise PolicyError(f"the features have {covariance.shape[0]} values, the current model {current.dim}")
    else:
        angle = max_principal_angle_degrees(current.components, components[:, : current.k])
        kept = float(np.sum(captured_ratios(current.components, covariance)))
        if k_requested and int(k_requested) != current.k:
            reasons.append(f"k changed from {current.k} to {int(k_requested)}")
        if not k_requested and variance_target is not None and kept < variance_target - 1e-12:
            reasons.append(
                f"the current {current.k} components keep {kept:.4f} of the variance, "
                f"under the target {variance_target}"
            )
        if angle > threshold_degrees:
            reasons.append(f"the top-{current.k} subspace moved {angle:.2f} degrees (threshold {threshold_degrees})")
    if requested == "never":
        if current is None:
            raise PolicyError("--refit never, but there is no current model to project with")
        why = (
            f"a refit is due ({'; '.join(reasons)}) but --refit never"
            if reasons
            else f"the top-{current.k} subspace moved {angle:.2f} degrees (threshold {threshold_degrees}): "
            "projecting the new batch only (--refit never)"
        )
        return Decision(False, why, requested, current.k, angle, threshold_degrees, kept)
    if requested == "always" and not reasons:
        reasons.append("requested (--refit always)")
    if reasons:
        return Decision(True, "; ".join(reasons), requested, new_k, angle, threshold_degrees, kept)
    return Decision(
        False,
        f"the top-{current.k} subspace moved {angle:.2f} degrees (threshold "
        f"{threshold_degrees}): projecting the new batch only",
        requested,
        current.k,
        angle,
        threshold_degrees,
        kept,
    )
