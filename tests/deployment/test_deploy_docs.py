"""docs/deploying.md and the IAM policy it gives: every link and anchor of the deployment pages leads somewhere,
and the policy grants the S3 and KMS actions the pipeline uses, on placeholders the page explains."""

from __future__ import annotations

import json
import re

from include.catalog_publisher.defaults import project_root

DOCS = ("README.md", "docs/deploying.md")
# What the pipeline calls: listing (planning, removals), HEAD/GET (artifacts, catalogs), PUT and multipart
# (uploads, artifacts), abort (a failed multipart upload), delete (delete_removed_images, retention).
S3_ACTIONS = {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"}
KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt"}


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_link_of_the_deployment_pages_leads_to_a_file_and_anchor_that_exist():
    for doc in DOCS:
        page = project_root() / doc
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), (doc, target)
            if anchor:
                assert anchor in anchors(linked.read_text()), (doc, target)


def test_the_iam_policy_grants_what_the_pipeline_calls_on_placeholders_the_page_explains():
    policy = json.loads((project_root() / "docs" / "iam-policy.json").read_text())
    actions = set()
    for statement in policy["Statement"]:
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
        assert statement["Effect"] == "Allow" and "*" not in str(statement["Resource"]).split("/", 1)[0]
    assert actions == S3_ACTIONS | KMS_ACTIONS
    placeholders = set(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", json.dumps(policy))) - {"KMS"}
    page = (project_root() / "docs" / "deploying.md").read_text()
    assert placeholders and all(f"`{name}`" in page for name in placeholders), placeholders
