"""An SDS client speaking to keyward's socket as Envoy does, built from Envoy's own
published protos (PyPI `xds-protos`, generated from envoyproxy/data-plane-api) and
`grpcio` (gRPC C-core, which sends the socket path as the HTTP/2 :authority).

    sds_envoy.py SOCKET exchange NAME...   request NAMEs, ACK, NACK; print what came
                                           (and the version of any later response)
    sds_envoy.py SOCKET rotation NAME...   request NAMEs, ACK, wait for the next push
    sds_envoy.py SOCKET denied             StreamSecrets and FetchSecrets status codes

Prints one JSON object. Certificates and keys are printed as the PEM the agent sent,
for the Rust test to verify.
"""

import json
import queue
import sys
import threading

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_spiffe_validator_config_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
NODE = base_pb2.Node(id="sidecar~10.0.0.1~web.default~default.svc.cluster.local", cluster="web")
# How long a NACK or an ACK is given to (wrongly) cause another response.
QUIET_SECONDS = 2.0
# How long a rotation push may take (ttl 4 s, renewed at half).
PUSH_SECONDS = 20.0


class Stream:
    """One StreamSecrets call: requests go in through a queue, responses come out
    through another, read by a thread."""

    def __init__(self, stub):
        self.requests = queue.Queue()
        self.responses = queue.Queue()
        self.call = stub.StreamSecrets(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as e:
            self.responses.put(e)

    def send(self, names, response=None, error=None):
        req = discovery_pb2.DiscoveryRequest(
            node=NODE, resource_names=names, type_url=SECRET_TYPE
        )
        if response is not None:
            req.version_info = response.version_info
            req.response_nonce = response.nonce
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(req)

    def receive(self, timeout):
        try:
            got = self.responses.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(got, grpc.RpcError):
            raise SystemExit(f"the stream failed: {got.code().name}: {got.details()}")
        return got

    def close(self):
        self.requests.put(None)
        self.call.cancel()


def describe(response):
    """The response as JSON: its version, nonce and secrets by name."""
    secrets = {}
    for any_ in response.resources:
        assert any_.type_url == SECRET_TYPE, any_.type_url
        s = secret_pb2.Secret()
        any_.Unpack(s)
        kind = s.WhichOneof("type")
        if kind == "tls_certificate":
            secrets[s.name] = {
                "kind": kind,
                "chain_pem": s.tls_certificate.certificate_chain.inline_bytes.decode(),
                "key_pem": s.tls_certificate.private_key.inline_bytes.decode(),
            }
        elif s.validation_context.HasField("custom_validator_config"):
            custom = s.validation_context.custom_validator_config
            config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
            custom.typed_config.Unpack(config)
            secrets[s.name] = {
                "kind": "spiffe_validator",
                "validator": custom.name,
                "trust_domains": [
                    {"name": td.name, "bundle_pem": td.trust_bundle.inline_bytes.decode()}
                    for td in config.trust_domains
                ],
            }
        else:
            secrets[s.name] = {
                "kind": kind,
                "trusted_ca_pem": s.validation_context.trusted_ca.inline_bytes.decode(),
            }
    return {"version": response.version_info, "nonce": response.nonce, "secrets": secrets}


def exchange(stub, names):
    stream = Stream(stub)
    stream.send(names)
    first = stream.receive(PUSH_SECONDS)
    if first is None:
        raise SystemExit("no response to the first request")
    stream.send(names, response=first)
    after_ack = stream.receive(QUIET_SECONDS)
    stream.send(names, response=first, error="keyward sds test: secret rejected")
    after_nack = stream.receive(QUIET_SECONDS)
    stream.close()
    version = lambda r: None if r is None else r.version_info
    return {
        "first": describe(first),
        "after_ack": version(after_ack),
        "after_nack": version(after_nack),
    }


def rotation(stub, names):
    stream = Stream(stub)
    stream.send(names)
    first = stream.receive(PUSH_SECONDS)
    stream.send(names, response=first)
    pushed = stream.receive(PUSH_SECONDS)
    if pushed is None:
        raise SystemExit("no push after a rotation")
    stream.send(names, response=pushed)
    stream.close()
    return {"first": describe(first), "pushed": describe(pushed)}


def denied(stub):
    out = {}
    try:
        stream = Stream(stub)
        stream.send(["default"])
        stream.receive(PUSH_SECONDS)
        out["stream_secrets"] = "OK"
    except SystemExit as e:
        out["stream_secrets"] = str(e).split(":")[1].strip()
    try:
        stub.FetchSecrets(
            discovery_pb2.DiscoveryRequest(node=NODE, resource_names=["default"], type_url=SECRET_TYPE),
            timeout=PUSH_SECONDS,
        )
        out["fetch_secrets"] = "OK"
    except grpc.RpcError as e:
        out["fetch_secrets"] = e.code().name
    return out


def main():
    socket, mode, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        if mode == "exchange":
            out = exchange(stub, names)
        elif mode == "rotation":
            out = rotation(stub, names)
        elif mode == "denied":
            out = denied(stub)
        else:
            raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
