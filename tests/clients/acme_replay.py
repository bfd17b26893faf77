"""Sends one ACME request twice with the same nonce, as a replaying attacker would,
using the `acme` and `josepy` packages that ship with certbot (a JWS nobody here wrote).

    acme_replay.py DIRECTORY_URL CA_BUNDLE

Prints one JSON object: the status and problem type of the first and the replayed
request, and whether the refusal carried a fresh Replay-Nonce.
"""
import json
import sys

import josepy as jose
import requests
from acme import jws
from cryptography.hazmat.primitives.asymmetric import ec


def main():
    directory_url, bundle = sys.argv[1], sys.argv[2]
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would win over verify
    session.verify = bundle
    directory = session.get(directory_url).json()
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    nonce = session.head(directory["newNonce"]).headers["Replay-Nonce"]
    url = directory["newAccount"]
    body = jws.JWS.sign(
        json.dumps({"termsOfServiceAgreed": True}).encode(),
        key=key,
        alg=jose.ES256,
        nonce=jose.b64decode(nonce),
        url=url,
    ).json_dumps()
    headers = {"Content-Type": "application/jose+json"}
    first = session.post(url, data=body, headers=headers)
    replayed = session.post(url, data=body, headers=headers)
    print(json.dumps({
        "first_status": first.status_code,
        "replayed_status": replayed.status_code,
        "replayed_type": replayed.json().get("type"),
        "replayed_content_type": replayed.headers.get("Content-Type"),
        "fresh_nonce": bool(replayed.headers.get("Replay-Nonce"))
        and replayed.headers.get("Replay-Nonce") != nonce,
    }))


if __name__ == "__main__":
    main()
