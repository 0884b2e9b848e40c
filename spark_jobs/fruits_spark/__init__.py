"""Shared code of the fruits Spark jobs (shipped to executors as a zip by `runtime.ship_package`).

Modules:
  interface  - what the jobs accept and leave (extensions, feature size, output names, PCA refit
               choices): the orchestration side reads it through fruits.contract
  manifest   - the manifest formats featurize.py reads; the DAG's planning writes with it too
  paths      - URI canonicalisation, the label rule, image-extension rules (pure Python)
  hadoop_fs  - small reads/writes/listings through Hadoop's FileSystem (local, file://, s3://)
  images     - decoding any supported image into a fixed-size RGB array, or a reject reason
  model      - MobileNetV2 feature extractor, weights on the driver, the per-worker predictor
  runtime    - Spark session, logging, clear one-line errors, shipping this package
  pca_report - explained variance, run report JSON and the scree/scatter plots
  classifier - the classify job's Spark ML side: path-hash split, input checks, fits, saved model
  classifier_report - the classifier's scores, consistency checks, metrics JSON, confusion plot
"""
