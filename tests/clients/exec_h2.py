"""A raw HTTP/2 Workload API client that keeps its connection across exec() or a change
of uid, for tests/agent_exec.rs. Framing is hyperframe's, header coding hpack's (both
from the python-hyper project); every request header is sent never-indexed and the
client's SETTINGS set HEADER_TABLE_SIZE to 0, so no HPACK dynamic-table state has to
survive the exec. Prints one JSON object: what each call received.

usage:
  exec_h2.py first SOCKET exec NEXT_EXE   call FetchX509SVID on stream 1, then exec
                                          NEXT_EXE (this script, stage `second`)
                                          keeping the connection
  exec_h2.py first SOCKET setuid UID      call on stream 1, then setresgid/setresuid
                                          to UID and call on stream 3
  exec_h2.py second FD FIRST_JSON         (after the exec) call on stream 3 on FD
"""

import json
import os
import signal
import socket
import struct
import sys

from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

signal.alarm(60)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("workload.spiffe.io", "true"),
]


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the agent closed the connection")
        buf += chunk
    return buf


def read_frame(sock):
    frame, length = Frame.parse_frame_header(memoryview(read_exact(sock, 9)))
    frame.parse_body(memoryview(read_exact(sock, length)))
    return frame


def call(sock, stream):
    """Sends FetchX509SVID on `stream` and reads until the stream ends or its first
    response message is complete; counts the DATA frames."""
    block = Encoder().encode([NeverIndexedHeaderTuple(k, v) for k, v in REQUEST])
    sock.sendall(HeadersFrame(stream, data=block, flags=["END_HEADERS"]).serialize())
    sock.sendall(DataFrame(stream, data=b"\0\0\0\0\0", flags=["END_STREAM"]).serialize())
    decoder = Decoder()
    got = {"data_frames": 0, "data_bytes": 0, "headers": {}, "ended": None}
    body = b""
    while True:
        f = read_frame(sock)
        if isinstance(f, SettingsFrame):
            if "ACK" not in f.flags:
                sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            continue
        if isinstance(f, PingFrame):
            if "ACK" not in f.flags:
                sock.sendall(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]).serialize())
            continue
        if isinstance(f, GoAwayFrame):
            got["ended"] = "GOAWAY"
            return got
        if f.stream_id != stream:
            continue
        if isinstance(f, RstStreamFrame):
            got["ended"] = "RST_STREAM"
            return got
        if isinstance(f, HeadersFrame):
            for name, value in decoder.decode(f.data):
                got["headers"][name] = value
        if isinstance(f, DataFrame):
            got["data_frames"] += 1
            got["data_bytes"] += len(f.data)
            body += f.data
        if "END_STREAM" in f.flags:
            got["ended"] = "END_STREAM"
            return got
        if len(body) >= 5 and len(body) >= 5 + struct.unpack(">I", body[1:5])[0]:
            got["ended"] = "message"
            return got


def first(path, mode, arg):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(PREFACE)
    # HEADER_TABLE_SIZE 0 and ENABLE_PUSH 0.
    sock.sendall(SettingsFrame(0, settings={0x1: 0, 0x2: 0}).serialize())
    one = call(sock, 1)
    sock.sendall(RstStreamFrame(1, error_code=0x8).serialize())
    if mode == "exec":
        os.set_inheritable(sock.fileno(), True)
        script = os.path.abspath(__file__)
        os.execv(arg, [arg, script, "second", str(sock.fileno()), json.dumps(one)])
    uid = int(arg)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    return {"first": one, "second": call(sock, 3)}


def second(fd, one):
    sock = socket.socket(fileno=int(fd))
    return {"first": json.loads(one), "second": call(sock, 3)}


if __name__ == "__main__":
    if sys.argv[1] == "first":
        result = first(*sys.argv[2:5])
    else:
        result = second(*sys.argv[2:4])
    result["exe"] = os.readlink("/proc/self/exe")
    print(json.dumps(result))
