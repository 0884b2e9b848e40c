"""What featurizing and keeping images costs a month on EMR in eu-west-3: a calculator on paper.

Every figure is a named assumption below (prices, throughput, cluster start-up, request counts), so
that a reader can redo the arithmetic or change one figure (docs/cost.md explains each). No network:
the prices are AWS list prices as of 2025, to be checked against the AWS pricing pages. The S3
request counts per image are those of the pipeline's own code, and tests/unit/test_cost.py counts
them again on moto, so that a change to the code that adds a request per image fails a test.

    python -m fruits_dev.cost            # the markdown tables of docs/cost.md
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fruits import events

SECONDS_PER_MONTH = 30 * 86400
GB = 1e9  # S3 bills decimal-ish GB; the difference (7%) is below these figures' precision


@dataclass(frozen=True)
class Prices:
    """eu-west-3 (Paris) on-demand list prices in USD, as of 2025: check the AWS pricing pages."""

    as_of: str = "2025 list prices, eu-west-3, USD; check aws.amazon.com/{ec2,emr,s3,sqs,ebs}/pricing"
    ec2_m5_xlarge_hour: float = 0.224  # EC2 On-Demand Linux m5.xlarge
    emr_m5_xlarge_hour: float = 0.056  # Amazon EMR price on top of EC2 (a quarter of the EC2 rate)
    ebs_gb_month: float = 0.0928  # gp3, EMR's default EBS volumes of each node
    s3_standard_gb_month: float = 0.024  # S3 Standard, first 50 TB
    s3_put_copy_list_per_1000: float = 0.0053  # PUT, COPY, POST, LIST
    s3_get_head_per_1000: float = 0.00042  # GET, HEAD and all other requests (DELETE is free)
    sqs_per_million: float = 0.40  # standard queue
    sqs_free_requests: int = 1_000_000  # SQS free tier, per month


@dataclass(frozen=True)
class Throughput:
    """featurize.py's measured rate, and how one node maps onto it."""

    # README "Benchmarks", quiet machine, 2026-11-30 13:30 (20261130-132956.json): featurize.py with
    # ONNX Runtime, 224 px, Fruits-360-sized JPEGs, marginal rate on this 2-core VM.
    measured_images_per_s: float = 195.2
    measured_cores: int = 2
    # Its CPU per image over the benches of that day: 8.69 ms quiet, 13.1-14.5 ms under other load.
    cpu_ms_per_image_range: tuple[float, float] = (8.69, 14.5)
    # decode_rgb (JPEG draft mode) of a 12 MP, 4.2 MB JPEG: 38.9 ms against 0.5 ms for a 100x100 one,
    # measured on this VM (docs/cost.md): what a phone photo adds per image.
    phone_photo_extra_decode_ms: float = 38.4
    # m5.xlarge: 4 vCPU = 2 physical cores (hyper-threads), counted as 2 of this VM's cores.
    cores_per_node: int = 2

    @property
    def images_per_s_per_core(self) -> float:
        return self.measured_images_per_s / self.measured_cores

    @property
    def per_core_range(self) -> tuple[float, float]:
        """Images/s per core if each image costs the fastest or slowest CPU time measured."""
        slow_ms, fast_ms = max(self.cpu_ms_per_image_range), min(self.cpu_ms_per_image_range)
        return 1000 / slow_ms, 1000 / fast_ms

    def per_core(self, phone_photos: bool) -> float:
        """A phone photo costs the measured time per image plus its larger decode."""
        if not phone_photos:
            return self.images_per_s_per_core
        return 1 / (1 / self.images_per_s_per_core + self.phone_photo_extra_decode_ms / 1000)


@dataclass(frozen=True)
class Cluster:
    """The transient cluster of one run (fruits.settings defaults: 1 primary + 2 core m5.xlarge)."""

    primary_nodes: int = 1
    core_nodes: int = 2
    ebs_gb_per_node: int = 64  # EMR's default EBS for an m5.xlarge (assumption)
    # Billed seconds before the first step (instances running, bootstrap installing ONNX Runtime,
    # tf2onnx, TensorFlow) and while terminating: assumptions, EMR typically takes 6-12 minutes.
    start_seconds: float = 8 * 60
    terminate_seconds: float = 60
    # Per run, once started: featurize.py's fixed start-up (13.8 s measured), pca.py on a small
    # batch (20-27 s measured), EMR's step scheduling (assumed 30 s per step, two steps).
    steps_fixed_seconds: float = 13.8 + 25 + 2 * 30

    @property
    def nodes(self) -> int:
        return self.primary_nodes + self.core_nodes

    @property
    def fixed_seconds_per_run(self) -> float:
        return self.start_seconds + self.terminate_seconds + self.steps_fixed_seconds


# ------------------------------------------------------------------------------ S3 requests

# Per new image, counted from the code (tests/unit/test_cost.py counts them again on moto):
#   plan_batch:   GetObject  the key marker state/keys/... (re-landing check, 404 for a new key)
#                 CopyObject the claim to batches/<id>/images/ (CopySourceIfMatch)
#   commit:       GetObject  the content marker (duplicate count)
#                 PutObject  the key marker;  GetObject + PutObject  the content marker (record)
#                 HeadObject + DeleteObject  the landing object, only if its ETag is unchanged
#   sense + plan: ListObjectsV2 one page per 1,000 objects waiting under the landing prefix
ORCHESTRATION_REQUESTS_PER_IMAGE = {"GetObject": 3, "CopyObject": 1, "PutObject": 2, "HeadObject": 1, "DeleteObject": 1}
LIST_PAGE = 1000
# Per run whatever its size (ledger, manifest, planning rejects, features listing), measured.
ORCHESTRATION_REQUESTS_PER_RUN = {"GetObject": 7, "PutObject": 4, "HeadObject": 5, "ListObjectsV2": 3}
# On EMR, not measurable here: Spark reads each image's copy (GET; EMRFS checks it first, HEAD).
SPARK_REQUESTS_PER_IMAGE = {"GetObject": 1, "HeadObject": 1}
# Per run: code upload, parquet parts, PCA model and report, step logs (an allowance, assumed).
SPARK_REQUESTS_PER_RUN = {"PutObject": 200, "GetObject": 200, "ListObjectsV2": 50}

PUT_CLASS = {"PutObject", "CopyObject", "ListObjectsV2", "CompleteMultipartUpload"}
FREE = {"DeleteObject", "DeleteObjects"}


def request_cost(counts: dict[str, float], prices: Prices) -> float:
    total = 0.0
    for operation, n in counts.items():
        if operation in FREE:
            continue
        rate = prices.s3_put_copy_list_per_1000 if operation in PUT_CLASS else prices.s3_get_head_per_1000
        total += n / 1000 * rate
    return total


def monthly_requests(images: int, runs: int) -> dict[str, float]:
    counts: dict[str, float] = {}
    for per_image, per_run in (
        (ORCHESTRATION_REQUESTS_PER_IMAGE, ORCHESTRATION_REQUESTS_PER_RUN),
        (SPARK_REQUESTS_PER_IMAGE, SPARK_REQUESTS_PER_RUN),
    ):
        for operation, n in per_image.items():
            counts[operation] = counts.get(operation, 0) + n * images
        for operation, n in per_run.items():
            counts[operation] = counts.get(operation, 0) + n * runs
    counts["ListObjectsV2"] = counts.get("ListObjectsV2", 0) + images / LIST_PAGE
    return counts


# ------------------------------------------------------------------------------ storage


@dataclass(frozen=True)
class Sizes:
    """Bytes kept per image after its commit (the landing object leaves; its claimed copy stays)."""

    fruits_360_jpeg: int = 5_000  # 100x100 Fruits-360 JPEG
    phone_photo: int = 3_500_000  # 2-5 MB phone JPEG
    # features parquet: 7,599 B/row measured on the demo's 87-row file (dictionary-encoded floats);
    # 1280 float32 alone are 5,120 B, which larger files approach.
    features_row: int = 7_600
    pca_k: int = 50
    pca_row_overhead: int = 25  # path, label, levels (577 B/row measured at k=69)
    # key marker + content marker + manifest line (tests/unit/test_cost.py measures them).
    state_per_image: int = 560

    def kept(self, image_bytes: int) -> int:
        return image_bytes + self.features_row + self.pca_k * 8 + self.pca_row_overhead + self.state_per_image


# ------------------------------------------------------------------------------ the month


@dataclass(frozen=True)
class Month:
    images: int = 1_000_000
    runs: int = 720
    phone_photos: bool = False
    months_kept: int = 1  # how many months of images the bucket holds


@dataclass(frozen=True)
class Estimate:
    month: Month
    featurize_hours: float  # wall hours the cluster spends featurizing
    node_hours: float
    compute_usd: float
    requests: dict[str, float] = field(repr=False)
    requests_usd: float
    stored_gb: float
    storage_usd: float

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.requests_usd + self.storage_usd


def featurize_seconds(images: int, throughput: Throughput, cluster: Cluster, phone_photos: bool = False) -> float:
    """images / (images/s per core x cores per node x core nodes): only core nodes run executors."""
    return images / (throughput.per_core(phone_photos) * throughput.cores_per_node * cluster.core_nodes)


def node_hour_price(prices: Prices, cluster: Cluster) -> float:
    return prices.ec2_m5_xlarge_hour + prices.emr_m5_xlarge_hour + cluster.ebs_gb_per_node * prices.ebs_gb_month / 730


def estimate(
    month: Month,
    prices: Prices = Prices(),
    throughput: Throughput = Throughput(),
    cluster: Cluster = Cluster(),
    sizes: Sizes = Sizes(),
) -> Estimate:
    work = featurize_seconds(month.images, throughput, cluster, month.phone_photos)
    cluster_seconds = work + month.runs * cluster.fixed_seconds_per_run
    node_hours = cluster_seconds * cluster.nodes / 3600
    requests = monthly_requests(month.images, month.runs)
    image_bytes = sizes.phone_photo if month.phone_photos else sizes.fruits_360_jpeg
    stored_gb = month.images * month.months_kept * sizes.kept(image_bytes) / GB
    return Estimate(
        month=month,
        featurize_hours=work / 3600,
        node_hours=node_hours,
        compute_usd=node_hours * node_hour_price(prices, cluster),
        requests=requests,
        requests_usd=request_cost(requests, prices),
        stored_gb=stored_gb,
        storage_usd=stored_gb * prices.s3_standard_gb_month,
    )


def run_fixed_usd(prices: Prices = Prices(), cluster: Cluster = Cluster()) -> float:
    """What a run costs on the cluster before and after it featurizes anything."""
    return cluster.fixed_seconds_per_run * cluster.nodes / 3600 * node_hour_price(prices, cluster)


def featurize_usd(
    images: int,
    prices: Prices = Prices(),
    throughput: Throughput = Throughput(),
    cluster: Cluster = Cluster(),
    phone_photos: bool = False,
) -> float:
    """The cluster's cost of featurizing alone (all nodes are billed while the core nodes work)."""
    seconds = featurize_seconds(images, throughput, cluster, phone_photos)
    return seconds * cluster.nodes / 3600 * node_hour_price(prices, cluster)


def back_to_back_runs(
    images: int, throughput: Throughput = Throughput(), cluster: Cluster = Cluster(), phone_photos: bool = False
) -> int:
    """Runs a month when images trickle in all the time and each run starts as the last one ends
    (the event-driven start, max_active_runs=1): the month minus the featurizing, in fixed run times."""
    free = SECONDS_PER_MONTH - featurize_seconds(images, throughput, cluster, phone_photos)
    return max(1, int(free // cluster.fixed_seconds_per_run))


# ------------------------------------------------------------------------------ starting runs


def start_cost(images: int, prices: Prices = Prices(), poke_interval: int = 60, sqs_poll_seconds: int = 60) -> dict:
    """Polling against the event-driven start (fruits.events.monthly_start_requests, docs/events.md)."""
    counts = events.monthly_start_requests(
        poke_interval=poke_interval, sqs_poll_seconds=sqs_poll_seconds, images=images
    )
    sqs_requests = counts["sqs_idle_receives"] + counts["sqs_image_requests"]
    return {
        **counts,
        "poll_usd": request_cost({"ListObjectsV2": counts["poll_list_requests"]}, prices),
        "sqs_requests": sqs_requests,
        "sqs_usd": max(0, sqs_requests - prices.sqs_free_requests) / 1e6 * prices.sqs_per_million,
        "sqs_usd_without_free_tier": sqs_requests / 1e6 * prices.sqs_per_million,
    }


# ------------------------------------------------------------------------------ the tables

# (name, runs a month); None: as many runs as fit back to back (back_to_back_runs)
SCENARIOS = (
    ("daily runs (30)", 30),
    ("hourly runs, polling (720)", 720),
    ("events, steady trickle: back to back", None),
)


def table(phone_photos: bool, images: int = 1_000_000) -> list[dict]:
    rows = []
    for name, runs in SCENARIOS:
        runs = runs if runs is not None else back_to_back_runs(images, phone_photos=phone_photos)
        first = estimate(Month(images=images, runs=runs, phone_photos=phone_photos))
        year = estimate(Month(images=images, runs=runs, phone_photos=phone_photos, months_kept=12))
        rows.append(
            {
                "scenario": name,
                "runs": runs,
                "estimate": first,
                "storage_12_usd": year.storage_usd,
                "stored_12_gb": year.stored_gb,
            }
        )
    return rows


def markdown(images: int = 1_000_000) -> str:
    prices, throughput, cluster = Prices(), Throughput(), Cluster()
    low, high = throughput.per_core_range
    lines = [
        f"Assumptions: {prices.as_of}. m5.xlarge ${prices.ec2_m5_xlarge_hour}/h EC2 + "
        f"${prices.emr_m5_xlarge_hour}/h EMR + {cluster.ebs_gb_per_node} GB EBS = "
        f"${node_hour_price(prices, cluster):.3f} per node-hour; {cluster.nodes} nodes "
        f"({cluster.primary_nodes} primary + {cluster.core_nodes} core); "
        f"{throughput.images_per_s_per_core:.1f} images/s per core (range {low:.0f}-{high:.0f}), "
        f"{throughput.cores_per_node} cores per node; {cluster.fixed_seconds_per_run / 60:.1f} min billed "
        f"per run besides featurizing; S3 ${prices.s3_standard_gb_month}/GB-month, "
        f"${prices.s3_put_copy_list_per_1000}/1,000 PUT/COPY/LIST, ${prices.s3_get_head_per_1000}/1,000 GET/HEAD.",
        "",
        f"Per run, whatever its size: {cluster.fixed_seconds_per_run / 60:.1f} min x {cluster.nodes} nodes = "
        f"${run_fixed_usd(prices, cluster):.3f}. Per million images: featurizing "
        f"${featurize_usd(1_000_000, prices, throughput, cluster):.2f} (Fruits-360) or "
        f"${featurize_usd(1_000_000, prices, throughput, cluster, phone_photos=True):.2f} (phone photos), "
        f"S3 requests ${request_cost(monthly_requests(1_000_000, 0), prices):.2f}.",
        "",
    ]
    for phone_photos in (False, True):
        kind = "phone photos (3.5 MB)" if phone_photos else "Fruits-360 JPEGs (5 KB)"
        rate = throughput.per_core(phone_photos)
        lines += [
            f"**{images:,} {kind} a month** ({rate:.1f} images/s per core):",
            "",
            "| runs a month | featurize h | node-hours | EMR + EC2 | S3 requests | storage, month 1 "
            "| storage after 12 months | total, month 1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in table(phone_photos, images):
            e: Estimate = row["estimate"]
            lines.append(
                f"| {row['scenario']}: {row['runs']:,} | {e.featurize_hours:.2f} | {e.node_hours:,.0f} "
                f"| ${e.compute_usd:,.2f} | ${e.requests_usd:,.2f} | ${e.storage_usd:,.2f} "
                f"({e.stored_gb:,.0f} GB) | ${row['storage_12_usd']:,.2f} ({row['stored_12_gb']:,.0f} GB) "
                f"| ${e.total_usd:,.2f} |"
            )
        lines.append("")
    start = start_cost(images, prices)
    lines += [
        '**Noticing new images** (poke and SQS poll every 60 s; docs/events.md, "Cost"):',
        "",
        "| | requests a month | cost | Airflow task tries |",
        "|---|---|---|---|",
        f"| polling | {start['poll_list_requests']:,} LIST | ${start['poll_usd']:.2f} "
        f"| {start['poll_sensor_tries']:,} |",
        f"| events (SQS) | {start['sqs_requests']:,} SQS | ${start['sqs_usd']:.2f} "
        f"(${start['sqs_usd_without_free_tier']:.2f} without the free tier) | 0 |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    print(markdown())


if __name__ == "__main__":
    main()
