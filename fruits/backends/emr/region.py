"""The region guard: a cluster is only created in a region the deployment allows, and only on a
bucket in such a region. By default those are the AWS regions of EU member states; any other
region needs the deployment setting FRUITS_EMR_ALLOWED_REGIONS (never a trigger-form Param, so
whoever can trigger a run cannot send the data elsewhere)."""

from __future__ import annotations

import re

from fruits.errors import PermanentError
from fruits.settings import DEFAULT_REGION, EU_MEMBER_STATE_REGIONS

# AWS regions in EU member states. eu-west-2 (London) and eu-central-2 (Zurich) are not in the EU.
EU_REGIONS = EU_MEMBER_STATE_REGIONS
REGION_PATTERN = r"^[a-z]{2,5}(-[a-z]+)+-[0-9]+$"
ALLOWED_REGIONS_SETTING = "FRUITS_EMR_ALLOWED_REGIONS"


class RegionNotAllowed(PermanentError, ValueError):
    """A region the data must not go to (or no region at all)."""


def is_eu_region(region: str) -> bool:
    return region in EU_REGIONS


def check_region(region: str, allowed: tuple[str, ...] = EU_REGIONS) -> str:
    """The region to create the cluster in, or RegionNotAllowed with what to do instead."""
    region = (region or "").strip()
    if not re.fullmatch(REGION_PATTERN, region):
        raise RegionNotAllowed(f"{region!r} is not an AWS region name (expected e.g. {DEFAULT_REGION})")
    if region in allowed:
        return region
    where = "outside the EU" if not is_eu_region(region) else "not allowed by this deployment"
    raise RegionNotAllowed(
        f"EMR region {region} is {where}: the fruit images and every output must stay in the regions this "
        f"deployment allows ({', '.join(allowed)}), so no cluster was created. Use one of those (default "
        f"{DEFAULT_REGION}, Paris); a region outside the EU needs approval and the deployment setting "
        f"{ALLOWED_REGIONS_SETTING}, it cannot be chosen when triggering a run."
    )


def check_bucket_region(
    bucket: str, region_of_bucket: str, cluster_region: str, allowed: tuple[str, ...] = EU_REGIONS
) -> str | None:
    """Refuse a bucket outside the allowed regions; return a warning when it is not in the cluster's region."""
    if region_of_bucket not in allowed:
        raise RegionNotAllowed(
            f"bucket {bucket} is in {region_of_bucket}, outside the regions this deployment allows "
            f"({', '.join(allowed)}): the images and outputs must stay there, so no cluster was created "
            f"({ALLOWED_REGIONS_SETTING} is the deployment's list)"
        )
    if region_of_bucket != cluster_region:
        return (
            f"bucket {bucket} is in {region_of_bucket} but the cluster would run in {cluster_region}: "
            f"every image and output crosses regions (inter-region transfer is billed, and slower)"
        )
    return None
