"""Shared code of the fruits Spark jobs (shipped to executors as a zip by `runtime.ship_package`).

Modules:
  interface  - what the jobs accept and leave (extensions, feature size, output names, PCA refit
               choices): the orchestration side reads it through fruits.contract
  manifest   - the manifest formats featurize.py reads; the DAG's planning writes with it too
  paths      - URI canonicalisation, the label rule, image-extension rules (pure Python)
  hadoop_fs  - small reads/writes/listings through Hadoop's FileSystem (local, file://, s3://)
  images     - decoding any supported image into a fixed-size RGB array, or a reject reason
  image_inputs - featurize's entries (manifest or listing), their bytes, the rejects known before decoding
  binary_files - Spark's binaryFile source over exactly the wanted files (hidden names, whole folders)
  featurizer - the predict_batch_udf (bytes -> features) and the features write that gathers decode errors
  model      - MobileNetV2 feature extractor, weights on the driver, the per-worker predictor
  model_loader - featurize's converted model: from --model-cache, or built in a child process beside Spark
  runtime    - Spark session, logging, clear one-line errors, shipping this package
  pca_inputs - pca's URI lists, features datasets with their batch, the previous run's state
  pca_fit    - pca's scan of the distinct new contents, its input checks, the spectrum
  pca_outputs - pca's projected vectors, saved model, scatter sample and state files
  pca_report - explained variance, run report JSON and the scree/scatter plots
  classifier - the classify job's Spark ML side: path-hash split, input checks, fits, saved model
  classifier_checks - what the split's label counts allow: empty sides, warnings, a rankable grid
  classifier_training - the regularisation chosen on the validation share, the final weighted fit
  classifier_report - the classifier's scores, consistency checks, metrics JSON, confusion plot
"""
