"""The EU guard: a cluster is only created in an EU region, and only on an EU bucket, unless a
run explicitly allows otherwise."""

from __future__ import annotations

import re

from fruits.settings import DEFAULT_REGION

# Commercial AWS regions in the European Union, offered by the trigger form.
EU_REGIONS = ("eu-west-3", "eu-west-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-south-2",
              "eu-central-2", "eu-west-2")
REGION_PATTERN = r"^[a-z]{2,5}(-[a-z]+)+-[0-9]+$"


class RegionNotAllowed(ValueError):
    """A region the data must not go to (or no region at all)."""


def is_eu_region(region: str) -> bool:
    return re.fullmatch(r"eu-[a-z]+-[0-9]+", region or "") is not None


def check_region(region: str, allow_non_eu: bool = False) -> str:
    """The region to create the cluster in, or RegionNotAllowed with what to do instead."""
    region = (region or "").strip()
    if not re.fullmatch(REGION_PATTERN, region):
        raise RegionNotAllowed(f"{region!r} is not an AWS region name (expected e.g. {DEFAULT_REGION})")
    if is_eu_region(region) or allow_non_eu:
        return region
    raise RegionNotAllowed(
        f"EMR region {region} is outside the EU: the fruit images and every output must stay in the EU, "
        f"so no cluster was created. Use an EU region (default {DEFAULT_REGION}, Paris; also "
        f"{', '.join(r for r in EU_REGIONS if r != DEFAULT_REGION)}), or, if processing outside the EU "
        f"has been approved, trigger the run with allow_non_eu_region=true.")



def check_bucket_region(bucket: str, region_of_bucket: str, cluster_region: str,
                        allow_non_eu: bool = False) -> str | None:
    """Refuse a bucket outside the EU; return a warning when it is not in the cluster's region."""
    if not is_eu_region(region_of_bucket) and not allow_non_eu:
        raise RegionNotAllowed(
            f"bucket {bucket} is in {region_of_bucket}, outside the EU: the images and outputs must stay in "
            f"the EU, so no cluster was created (allow_non_eu_region=true overrides this check)")
    if region_of_bucket != cluster_region:
        return (f"bucket {bucket} is in {region_of_bucket} but the cluster would run in {cluster_region}: "
                f"every image and output crosses regions (inter-region transfer is billed, and slower)")
    return None
