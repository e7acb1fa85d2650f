"""Both landing-zone implementations behave the same: key-ordered listing (paginated on S3),
resuming after a key, batch-file filtering, archiving with the batch id, re-uploads seen as new."""

from __future__ import annotations

import time

import pytest

from hub_pipelines.landing import LocalFolder, S3Prefix


@pytest.fixture(params=["local", "s3"])
def zone_and_put(request, tmp_path):
    if request.param == "local":
        zone = LocalFolder(tmp_path / "landing")

        def put(key: str, data: bytes) -> None:
            path = zone.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return zone, put
    bucket, client = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    # page_size 2: five files take three ListObjectsV2 pages.
    zone = S3Prefix(bucket, prefix="landing/", archive_prefix="archive/", endpoint_url=endpoint, page_size=2)

    def put(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key="landing/" + key, Body=data)

    return zone, put


KEYS = ["b/2.jsonl", "a/1.jsonl", "c/3.json.gz", "a/0.ndjson", "d/4.json"]


def test_lists_batch_files_in_key_order_across_pages(zone_and_put):
    zone, put = zone_and_put
    for key in KEYS:
        put(key, key.encode())
    put("a/notes.txt", b"not a batch")
    put("a/.partial.jsonl", b"being written")
    put("labels.json", b"[]")  # the generator's ground truth beside its batches
    put("manifest.json", b"{}")
    listed = [f.key for f in zone.list_pending()]
    assert listed == sorted(KEYS)
    assert [f.key for f in zone.list_pending(start_after="a/1.jsonl")] == sorted(KEYS)[2:]
    assert {f.key: f.size for f in zone.list_pending()}["a/1.jsonl"] == len(b"a/1.jsonl")


def test_archive_removes_from_pending_and_keeps_both_copies_of_a_name(zone_and_put):
    zone, put = zone_and_put
    put("a/1.jsonl", b"first")
    first = zone.archive("a/1.jsonl", "1" * 64)
    assert [f.key for f in zone.list_pending()] == []
    put("a/1.jsonl", b"second")
    second = zone.archive("a/1.jsonl", "2" * 64)
    assert first != second
    assert [f.key for f in zone.list_pending()] == []


def test_reupload_changes_the_version(zone_and_put):
    zone, put = zone_and_put
    put("a/1.jsonl", b"same")
    (before,) = zone.list_pending()
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    put("a/1.jsonl", b"same")
    (after,) = zone.list_pending()
    assert before.key == after.key and before.version != after.version
    assert zone.read("a/1.jsonl") == b"same"


def test_local_keys_cannot_escape_the_folder(tmp_path):
    zone = LocalFolder(tmp_path / "landing")
    with pytest.raises(ValueError, match="outside the landing folder"):
        zone.read("../secrets.jsonl")


def test_s3_listing_follows_every_page(s3_bucket, s3_endpoint):
    """Nine batch files with two keys a page: the listing asks the server five times and misses none."""
    bucket, client = s3_bucket
    zone = S3Prefix(
        bucket, prefix="landing/", archive_prefix="archive/", endpoint_url=s3_endpoint, page_size=2
    )
    requests = []
    zone.client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2", lambda params, **_: requests.append(params)
    )
    keys = [f"day/{i:02d}.jsonl" for i in range(9)]
    for key in keys:
        client.put_object(Bucket=bucket, Key="landing/" + key, Body=b"{}")
    assert [f.key for f in zone.list_pending()] == keys
    assert len(requests) == 5
    assert all(r["MaxKeys"] == 2 for r in requests)
    assert [bool(r.get("ContinuationToken")) for r in requests] == [False] + [True] * 4
