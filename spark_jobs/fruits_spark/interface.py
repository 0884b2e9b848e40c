"""What the jobs accept and what they leave, as plain constants (no imports).

The orchestration side builds the jobs' arguments and reads their outputs through
`fruits.contract`, which takes these names from here: one definition for both sides.
"""

# Images the jobs accept, by extension in any letter case: the one list of accepted types (planning
# classifies landing keys with it, featurize.py reads and paths.IMAGE_PATH_REGEX follows it).
# .heic/.heif need the pillow-heif plugin on the executors (fruits_spark.images).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
# MobileNetV2 without its head, global-average-pooled: floats per image.
FEATURE_DIM = 1280

# featurize.py: one row per input file in exactly one of the two datasets.
FEATURES_COLUMNS = ("path", "label", "features", "width", "height", "size_bytes", "sha256")
REJECTS_COLUMNS = ("path", "label", "reason", "size_bytes")

# pca.py: its outputs under one folder (the DAG's pca/run=<run_id>/).
PCA_VECTORS = "vectors"
PCA_MODEL = "model"
PCA_REPORT = "report.json"
PCA_COLUMNS = ("path", "label", "pca_features")
# pca.py's state beside its report, what the next run starts from (fruits_spark.pca_state: what each holds).
PCA_MOMENTS = "moments.npz"
PCA_BASIS = "basis.npz"
PCA_CONTENTS = "contents.bin"
PCA_VECTORS_LIST = "vectors_list.txt"
# pca.py --refit: whether a run may refit its space (fruits_spark.pca_state.decide), and --refit-angle's
# default: the largest principal angle (degrees) between the current and the merged space `auto` keeps.
PCA_REFIT_CHOICES = ("auto", "always", "never")
PCA_REFIT_ANGLE = 10.0

# classify.py: its outputs under one folder (the classifier DAG's classifier/run=<run_id>/).
CLASSIFIER_MODEL = "model"
CLASSIFIER_PREDICTIONS = "predictions"
CLASSIFIER_METRICS = "metrics.json"
CLASSIFIER_CONFUSION_PNG = "confusion_matrix.png"


def plot_uris(report: str) -> dict[str, str]:
    """pca.py draws the scree plot and the scatter of the first two components beside its report."""
    stem = report[: -len(".json")] if report.endswith(".json") else report
    return {"scree": f"{stem}_scree.png", "scatter": f"{stem}_scatter.png"}
