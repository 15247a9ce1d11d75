"""Checks a DSSE envelope with the Secure Systems Lab's own library (securesystemslib, from
PyPI), not jobpack's code: the signature with only the public key, then that the in-toto
statement's subject is the artifact's sha256.

    verify.py ENVELOPE.json PUBLIC_KEY.pem KEYID ARTIFACT

Prints OK and exits 0, or prints why and exits 1.
"""

import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

envelope_file, key_file, keyid, artifact = sys.argv[1:5]
with open(envelope_file) as f:
    text = f.read().strip().splitlines()[0]
with open(key_file, "rb") as f:
    public = serialization.load_pem_public_key(f.read())
key = SSlibKey.from_crypto(public, keyid=keyid)
env = Envelope.from_dict(json.loads(text))
try:
    env.verify([key], 1)
except Exception as e:  # VerificationError, or a malformed envelope
    print(f"signature: {e}")
    sys.exit(1)
statement = json.loads(base64.b64decode(json.loads(text)["payload"]))
assert env.payload_type == "application/vnd.in-toto+json", env.payload_type
assert statement["_type"] == "https://in-toto.io/Statement/v1", statement
assert statement["predicateType"] in (
    "https://slsa.dev/provenance/v1",
    "https://github.com/jobpack/jobpack/receipt/v1",
), statement
with open(artifact, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
if not any(s["digest"].get("sha256") == digest for s in statement["subject"]):
    print(f"subject: the statement is not about sha256:{digest}")
    sys.exit(1)
print("OK")
