"""What every run does whatever the compute backend: plan a batch, validate its outputs, commit
it to the ledger, report. Plain functions over `fruits.storage.Bucket`, testable without Airflow."""
