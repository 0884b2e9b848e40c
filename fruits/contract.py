"""The contract between the DAG and the Spark jobs, written once for every caller.

The run's plan (`fruits.plan`) and the benchmarks build the jobs' command lines here, and read the jobs'
outputs by the names defined here (taken from `fruits_spark.interface`, the jobs' own side):

    featurize.py --manifest LIST --output FEATURES --rejects REJECTS --weights W --image-size N
    pca.py --features FEATURES --output <pca>/vectors --model <pca>/model --report <pca>/report.json
           --allow-empty (--k K | --variance V) --refit R [--previous <pca>] [--history-list LIST]
    classify.py (--vectors-list LIST | --vectors <pca>/vectors) --pca-run RUN_ID --output <classifier>/

The PCA inputs are always a list file in the bucket (one features dataset a line): a step
argument is capped by EMR at 10,280 characters, which a few hundred committed batches would
exceed if the URIs were passed themselves. Which jobs a run has, on which URIs: `fruits.plan`.

The records that travel between tasks (`Batch`, `ComputeResult`) are typed here too; XCom holds
them as plain dicts (`to_xcom` / `from_xcom`), so no custom class needs to be allowed for
deserialisation in Airflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fruits_spark import interface

IMAGE_EXTENSIONS = interface.IMAGE_EXTENSIONS
FEATURE_DIM = interface.FEATURE_DIM
# pca.py's state files, beside its report: what the next run starts from.
PCA_MOMENTS, PCA_BASIS = interface.PCA_MOMENTS, interface.PCA_BASIS
PCA_CONTENTS, PCA_VECTORS_LIST = interface.PCA_CONTENTS, interface.PCA_VECTORS_LIST
PCA_REFIT_CHOICES = interface.PCA_REFIT_CHOICES

FEATURIZE_SCRIPT = "featurize.py"
PCA_SCRIPT = "pca.py"
CLASSIFY_SCRIPT = "classify.py"


# ----------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class _OutputFolder:
    """A job's outputs under one folder or prefix (a local path, file:// or s3:// URI)."""

    root: str

    def __post_init__(self) -> None:
        if not self.root.endswith("/"):
            object.__setattr__(self, "root", self.root + "/")


@dataclass(frozen=True)
class PcaOutputs(_OutputFolder):
    """Where pca.py writes."""

    @property
    def vectors(self) -> str:
        return self.root + interface.PCA_VECTORS

    @property
    def model(self) -> str:
        return self.root + interface.PCA_MODEL

    @property
    def report(self) -> str:
        return self.root + interface.PCA_REPORT

    @property
    def plots(self) -> dict[str, str]:
        return interface.plot_uris(self.report)

    # The state the next run starts from, beside the report (names: fruits_spark.pca_state).
    @property
    def moments(self) -> str:
        return self.root + PCA_MOMENTS

    @property
    def basis(self) -> str:
        return self.root + PCA_BASIS

    @property
    def contents(self) -> str:
        return self.root + PCA_CONTENTS

    @property
    def vectors_list(self) -> str:
        """Every vector dataset of the run's space (committed batches + this one), one a line."""
        return self.root + PCA_VECTORS_LIST

    def state_files(self) -> dict[str, str]:
        return {
            "report": self.report,
            "moments": self.moments,
            "basis": self.basis,
            "contents": self.contents,
            "vectors_list": self.vectors_list,
        }

    def uris(self) -> dict[str, str]:
        """Every output by name, for run reports and the demo."""
        return {
            "pca": self.root,
            "vectors": self.vectors + "/",
            "model": self.model + "/",
            "pca_report": self.report,
            "vectors_list": self.vectors_list,
            **self.plots,
        }


@dataclass(frozen=True)
class ClassifierOutputs(_OutputFolder):
    """Where classify.py writes."""

    @property
    def model(self) -> str:
        return self.root + interface.CLASSIFIER_MODEL

    @property
    def predictions(self) -> str:
        return self.root + interface.CLASSIFIER_PREDICTIONS

    @property
    def metrics(self) -> str:
        return self.root + interface.CLASSIFIER_METRICS

    @property
    def confusion_matrix(self) -> str:
        return self.root + interface.CLASSIFIER_CONFUSION_PNG

    def uris(self) -> dict[str, str]:
        return {
            "classifier": self.root,
            "model": self.model + "/",
            "predictions": self.predictions + "/",
            "metrics": self.metrics,
            "confusion_matrix": self.confusion_matrix,
        }


@dataclass(frozen=True)
class FeaturizeOutputs:
    features: str
    rejects: str


# ----------------------------------------------------------------------------- arguments


def featurize_args(
    *, manifest: str, outputs: FeaturizeOutputs, weights: str, image_size: int, model_cache: str | None = None
) -> list[str]:
    """`model_cache`: where converted models are kept between jobs (only the first job converts)."""
    return [
        "--manifest",
        manifest,
        "--output",
        outputs.features,
        "--rejects",
        outputs.rejects,
        "--weights",
        str(weights),
        "--image-size",
        str(int(image_size)),
        *(["--model-cache", model_cache] if model_cache else []),
    ]


def pca_size_args(pca_k: int | None, pca_variance: float) -> list[str]:
    """A fixed k when given, else the smallest k reaching the variance."""
    return ["--k", str(int(pca_k))] if pca_k else ["--variance", str(float(pca_variance))]


def pca_args(
    *,
    features: str,
    outputs: PcaOutputs,
    pca_k: int | None,
    pca_variance: float,
    previous: str | None = None,
    history_list: str | None = None,
    refit: str = "auto",
    refit_angle: float | None = None,
    space_id: str | None = None,
) -> list[str]:
    """pca.py on one new batch's features (`features`), merged with the `previous` run's state
    (its PCA folder; None: fit from scratch on `history_list` + the batch). `history_list` (the
    features of every committed batch, one a line) is read only if the job refits."""
    if refit not in PCA_REFIT_CHOICES:
        raise ValueError(f"refit must be one of {', '.join(PCA_REFIT_CHOICES)}, not {refit!r}")
    # --allow-empty: a pipeline whose images were all rejected so far still gets a (k=0) report.
    args = [
        "--features",
        features,
        "--output",
        outputs.vectors,
        "--model",
        outputs.model,
        "--report",
        outputs.report,
        "--allow-empty",
        *pca_size_args(pca_k, pca_variance),
        "--refit",
        refit,
    ]
    for option, value in (
        ("--previous", previous),
        ("--history-list", history_list),
        ("--refit-angle", None if refit_angle is None else str(float(refit_angle))),
        ("--space-id", space_id),
    ):
        if value:
            args += [option, value]
    return args


def classify_args(
    *, vectors: str, pca_run: str, outputs: ClassifierOutputs, vectors_list: str | None = None
) -> list[str]:
    """classify.py on the datasets named in `vectors_list` (a PCA run's space), else on `vectors`."""
    source = ["--vectors-list", vectors_list] if vectors_list else ["--vectors", vectors]
    return [*source, "--pca-run", pca_run, "--output", outputs.root]


def features_list_text(uris: list[str]) -> str:
    """The body of a PCA input list: one features dataset a line."""
    for uri in uris:
        if "\n" in uri or "\r" in uri:
            raise ValueError(f"a features location cannot contain a line break: {uri!r}")
    return "".join(uri + "\n" for uri in uris)


# ----------------------------------------------------------------------------- records


class _Record:
    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value):
        if isinstance(value, cls):
            return value
        return cls(**value)


@dataclass(frozen=True)
class Batch(_Record):
    """The images one run processes, as planned (the keys themselves stay in the manifest in S3)."""

    batch_id: str
    bucket: str
    images: int  # planned: the featurize job's inputs
    committed_batches: list[str]
    committed_features_rows: int
    seconds: float = 0.0
    planning_rejects: int = 0  # landing objects rejected before any job (reasons in planning_rejects.jsonl)
    planning_reject_reasons: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)  # not an image type, by reason; left in place
    relandings: int = 0  # keys processed before, now with new content
    unlabelled: int = 0  # planned images directly under the landing prefix (no label folder)
    pca_state: dict | None = None  # the ledger's current PCA state when the batch was planned

    def pca_batches(self) -> list[str]:
        """Every committed batch plus this one (never an uncommitted batch's leftovers)."""
        return [b for b in self.committed_batches if b != self.batch_id] + [self.batch_id]


@dataclass(frozen=True)
class PcaRun(_Record):
    """A committed PCA run, as the classifier DAG consumes it."""

    bucket: str
    run_id: str
    pca_prefix: str
    k: int
    rows: int
    batch_id: str
    source: str  # how it was chosen: "param", "asset event" or "latest committed"
    vectors_list: str | None = None  # key of the run's vectors list (None: a run from before incremental PCA)

    def vectors_key(self) -> str:
        return self.pca_prefix + interface.PCA_VECTORS + "/"


@dataclass(frozen=True)
class ComputeResult(_Record):
    """What a compute backend hands validation and the report, the same for every backend."""

    pca_prefix: str
    outputs: dict[str, str]
    stage_seconds: dict[str, float | None]
    details: dict = field(default_factory=dict)  # backend-specific facts (cluster id, code version)
