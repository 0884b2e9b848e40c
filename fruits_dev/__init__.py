"""Developer tooling, never imported by the pipeline itself: `make demo`, the one-shot DAG runner,
the embedded S3 server, the sample-image generator and Spark's JVM start-up archive."""
