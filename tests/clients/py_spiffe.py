"""A Workload API caller written with PyPI's `spiffe` package (py-spiffe, on gRPC
C-core), for tests/agent_clients.rs. It finds the agent through SPIFFE_ENDPOINT_SOCKET
like any workload, checks what it fetched with the package's own types and
`cryptography`, and prints one JSON object for the Rust test to assert on.

usage: py_spiffe.py x509 | jwt | rotation | denied
"""

import base64
import datetime
import json
import signal
import sys
import time

from cryptography.hazmat.primitives import serialization
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient, X509Source

TRUST_DOMAIN = TrustDomain("example.org")
AUDIENCE = "web"
# Liveness: a hung client fails the test instead of stalling it.
signal.alarm(60)


def verify_chain(chain, roots):
    """Checks that `chain` (leaf first) is valid now and ends at one of `roots`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert, issuer in zip(chain, chain[1:]):
        cert.verify_directly_issued_by(issuer)
    for root in roots:
        try:
            chain[-1].verify_directly_issued_by(root)
            break
        except Exception:
            continue
    else:
        raise AssertionError("the chain does not end at an authority of the bundle")
    for cert in chain:
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc, "outside validity"


def spki(key):
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def der_b64(cert):
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def x509():
    client = WorkloadApiClient(default_timeout=20)
    svid = client.fetch_x509_svid()
    bundle = client.fetch_x509_bundles().get_bundle_for_trust_domain(TRUST_DOMAIN)
    roots = list(bundle.x509_authorities)
    verify_chain(svid.cert_chain, roots)
    return {
        "spiffe_id": str(svid.spiffe_id),
        "key_matches_leaf": spki(svid.private_key.public_key()) == spki(svid.leaf.public_key()),
        "roots": sorted(der_b64(r) for r in roots),
    }


def jwt():
    client = WorkloadApiClient(default_timeout=20)
    svid = client.fetch_jwt_svid(audience={AUDIENCE})
    checked = client.validate_jwt_svid(svid.token, AUDIENCE)
    bundles = client.fetch_jwt_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TRUST_DOMAIN)
    offline = JwtSvid.parse_and_validate(svid.token, bundle, {AUDIENCE})
    return {
        "spiffe_id": str(svid.spiffe_id),
        "validated_by_agent": str(checked.spiffe_id),
        "validated_offline": str(offline.spiffe_id),
        "audience": sorted(offline.audience),
        "jwt_authorities": len(bundle.jwt_authorities),
    }


def rotation():
    with X509Source(timeout_in_seconds=20) as source:
        first = source.get_x509_context().default_svid
        deadline = time.monotonic() + 30
        while source.get_x509_context().default_svid.leaf.serial_number == first.leaf.serial_number:
            assert time.monotonic() < deadline, "no new SVID within 30 s"
            time.sleep(0.2)
        second = source.get_x509_context().default_svid
        roots = list(source.get_bundle_for_trust_domain(TRUST_DOMAIN).x509_authorities)
        verify_chain(second.cert_chain, roots)
        return {
            "spiffe_id": str(second.spiffe_id),
            "serials": [format(s.leaf.serial_number, "X") for s in (first, second)],
            "new_key": spki(first.private_key.public_key()) != spki(second.private_key.public_key()),
        }


def status_of(call):
    """The gRPC status name `call` failed with (through py-spiffe's error wrapping)."""
    try:
        call()
    except Exception as e:
        cause = e
        while cause is not None and not hasattr(cause, "code"):
            cause = cause.__cause__
        return cause.code().name if cause is not None else repr(e)
    return "OK"


def denied():
    client = WorkloadApiClient(default_timeout=20)
    return {
        "fetch_x509_svid": status_of(client.fetch_x509_svid),
        "fetch_x509_bundles": status_of(client.fetch_x509_bundles),
        "fetch_jwt_svid": status_of(lambda: client.fetch_jwt_svid(audience={AUDIENCE})),
        "validate_jwt_svid": status_of(lambda: client.validate_jwt_svid("a.b.c", AUDIENCE)),
        "fetch_jwt_bundles": status_of(client.fetch_jwt_bundles),
    }


if __name__ == "__main__":
    mode = {"x509": x509, "jwt": jwt, "rotation": rotation, "denied": denied}[sys.argv[1]]
    print(json.dumps(mode()))
