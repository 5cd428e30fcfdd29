"""A look inside the cluster's S3 bucket with the standard library alone: ListObjectsV2 and GET
signed with AWS Signature V4 (SeaweedFS checks signatures), and the index of Floe's object format
(Shared/ObjectStorage/ObjectFormat.swift), so a test can say which streams each object holds.

boto3 would do the signing too, but it is not among the packages Tools/install-deps.sh installs.
"""
import datetime
import hashlib
import hmac
import struct
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree

S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
FOOTER = struct.Struct(">QIHHI8s")  # index position, index length, version, reserved, crc32c, magic
ENTRY = struct.Struct(">QqqiqQII")  # stream, first offset, end offset, records, max timestamp, position, length, crc32c
MAGIC = b"FLOEOBJ1"
KINDS = {"ss": "stream_set", "so": "stream", "ro": "routed"}


class BucketError(Exception):
    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Bucket:
    """One bucket of an S3 endpoint, addressed path-style as floe's S3 store does."""

    def __init__(self, endpoint, name, access_key, secret_key, region="us-east-1"):
        self.endpoint = endpoint.rstrip("/")
        self.host = urllib.parse.urlsplit(self.endpoint).netloc
        self.name, self.access_key, self.secret_key, self.region = name, access_key, secret_key, region

    def _request(self, path, query=(), headers=None, timeout=30):
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(b"").hexdigest()
        quoted_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                                for k, v in sorted(query))
        quoted_path = urllib.parse.quote(path, safe="/-_.~")
        signed = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
        names = ";".join(sorted(signed))
        canonical = "\n".join(["GET", quoted_path, quoted_query, "".join(f"{k}:{signed[k]}\n" for k in sorted(signed)),
                               names, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        request = urllib.request.Request(self.endpoint + quoted_path + ("?" + quoted_query if quoted_query else ""))
        for name, value in signed.items():
            if name != "host":
                request.add_header(name, value)
        request.add_header("Authorization", f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                            f"SignedHeaders={names}, Signature={signature}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as error:
            raise BucketError(f"GET {path}?{quoted_query}: HTTP {error.code}: {error.read()[:300]!r}", error.code) from None

    def list(self, prefix="", max_pages=1000):
        """Every key under `prefix` with its size, by ListObjectsV2 pages of 1000."""
        objects, token = {}, None
        for _ in range(max_pages):
            query = [("list-type", "2"), ("prefix", prefix), ("max-keys", "1000")]
            if token:
                query.append(("continuation-token", token))
            root = ElementTree.fromstring(self._request(f"/{self.name}", query))
            for item in root.iter(f"{S3_NAMESPACE}Contents"):
                objects[item.findtext(f"{S3_NAMESPACE}Key")] = int(item.findtext(f"{S3_NAMESPACE}Size"))
            token = root.findtext(f"{S3_NAMESPACE}NextContinuationToken")
            if root.findtext(f"{S3_NAMESPACE}IsTruncated") != "true" or not token:
                return objects
        raise BucketError(f"listing {self.name} did not end after {max_pages} pages")

    def get(self, key):
        return self._request(f"/{self.name}/{key}")


def kind_of(key):
    """`stream_set`, `stream` or `routed` for a Floe object key (`HHHHHHHH/ss/IIIIIIIIIIIIIIII`), else None."""
    parts = key.split("/")
    if len(parts) != 3 or len(parts[0]) != 8 or len(parts[2]) != 16:
        return None
    return KINDS.get(parts[1])


def index_entries(data):
    """The blocks an object holds, as dicts with stream, first, end, records, max_timestamp, position, length."""
    if len(data) < FOOTER.size:
        raise BucketError(f"object of {len(data)} bytes has no footer")
    position, length, version, _, _, magic = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    if magic != MAGIC or version != 1 or position + length > len(data) - FOOTER.size:
        raise BucketError(f"not a Floe object (magic {magic!r}, version {version})")
    (count,) = struct.unpack_from(">I", data, position)
    if 4 + count * ENTRY.size != length:
        raise BucketError(f"index of {count} entries in {length} bytes")
    names = ("stream", "first", "end", "records", "max_timestamp", "position", "length", "crc")
    return [dict(zip(names, ENTRY.unpack_from(data, position + 4 + i * ENTRY.size))) for i in range(count)]


def survey(bucket, markers=None):
    """Reads every Floe object in the bucket: {key: {"kind", "size", "blocks", "topics"}}. A key
    deleted between the listing and its GET is left out.

    With `markers` ({topic: bytes}), each object's "topics" names the topics whose marker occurs in
    one of its blocks; it only works for records written uncompressed."""
    objects = {}
    for key, size in sorted(bucket.list().items()):
        kind = kind_of(key)
        if kind is None:
            continue
        try:
            data = bucket.get(key)
        except BucketError as error:
            if error.status == 404:
                continue
            raise
        if len(data) != size:
            raise BucketError(f"{key}: listed as {size} bytes, read {len(data)}")
        blocks = index_entries(data)
        topics = set()
        for topic, marker in (markers or {}).items():
            if any(marker in data[b["position"]:b["position"] + b["length"]] for b in blocks):
                topics.add(topic)
        objects[key] = {"kind": kind, "size": size, "blocks": blocks, "topics": topics}
    return objects
