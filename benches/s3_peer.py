#!/usr/bin/env python3
"""boto3 side of the S3 rows of `make bench`.

    s3_peer.py upload ENDPOINT BUCKET PREFIX FILE...   create BUCKET if missing, upload each FILE
                                                       to PREFIX/<its name> (boto3 upload_file)
    s3_peer.py download ENDPOINT BUCKET PREFIX         list PREFIX (ListObjectsV2, every page) and
                                                       download every *.parquet under it, one object
                                                       after another, each with boto3's default
                                                       managed transfer (download_fileobj: ranged
                                                       GETs of 8 MiB on up to 10 threads) into
                                                       /dev/null

`download` is the reference the S3 run is held to: merely fetching the day's objects from the
same server, nothing decoded, nothing written. Time the whole process from outside (interpreter
start and the boto3 import included, as nightshift's start-up is in its row).
Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); path-style
addressing, region us-east-1. Needs: boto3.
"""
import os
import sys
import time

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def upload(endpoint, bucket, prefix, files):
    s3 = client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass
    for f in files:
        s3.upload_file(f, bucket, f"{prefix.rstrip('/')}/{os.path.basename(f)}")
    print(f"uploaded {len(files)} objects to s3://{bucket}/{prefix}")


def download(endpoint, bucket, prefix):
    t0 = time.perf_counter()
    s3 = client(endpoint)
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.update((o["Key"], o["Size"]) for o in page.get("Contents", []) if o["Key"].endswith(".parquet"))
    if not objects:
        sys.exit(f"no objects under s3://{bucket}/{prefix}")
    with open(os.devnull, "wb") as sink:
        for key in sorted(objects):
            s3.download_fileobj(bucket, key, sink)
    s = time.perf_counter() - t0
    size = sum(objects.values())
    print(f"objects={len(objects)} bytes={size} seconds={s:.3f} MB_per_s={size / s / 1e6:.0f}")


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    cmd, endpoint, bucket, prefix = sys.argv[1:5]
    if cmd == "upload":
        upload(endpoint, bucket, prefix, sys.argv[5:])
    elif cmd == "download" and len(sys.argv) == 5:
        download(endpoint, bucket, prefix)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
