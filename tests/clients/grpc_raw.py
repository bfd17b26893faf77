"""A raw `grpcio` (gRPC C-core) call to the Workload API whose HTTP/2 `:authority` is
the socket path, as grpc-java sends it, for tests/agent_clients.rs. No generated code:
the request is the empty message and the response goes back to the Rust test as base64
bytes (or the gRPC status name), printed as one JSON object.

usage: grpc_raw.py SOCKET_PATH [METHOD_PATH]
METHOD_PATH (default /SpiffeWorkloadAPI/FetchX509SVID) is called the same way, as a
server-streaming call with an empty request.
"""

import base64
import json
import signal
import sys

import grpc

signal.alarm(60)


def main(path, method="/SpiffeWorkloadAPI/FetchX509SVID"):
    channel = grpc.insecure_channel(
        "unix:" + path, options=[("grpc.default_authority", path)]
    )
    call = channel.unary_stream(
        method,
        request_serializer=None,
        response_deserializer=None,
    )
    responses = call(b"", metadata=[("workload.spiffe.io", "true")], timeout=20)
    try:
        first = next(responses)
    except grpc.RpcError as e:
        return {"status": e.code().name, "details": e.details()}
    finally:
        responses.cancel()
    return {"status": "OK", "response": base64.b64encode(first).decode()}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
