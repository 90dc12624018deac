"""Frame-level HTTP/2 clients for the tests: each scenario speaks to the
front over TLS (ALPN h2) with hyperframe and hpack, doing what a
well-behaved library would refuse to (resetting streams in a loop, endless
CONTINUATIONs, never opening a window), and prints what came back as JSON.

    python3 h2_abuse.py SCENARIO HOST PORT [ARG]
"""

import json
import socket
import ssl
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Client:
    def __init__(self, host, port, settings=None):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        self.encoder = Encoder()
        self.host = "%s:%d" % (host, port)
        self.buffer = b""
        self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def send(self, data):
        """False once the front has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (ConnectionError, ssl.SSLError, socket.timeout):
            return False

    def block(self, path, method="GET", extra=()):
        fields = [(":method", method), (":scheme", "https"), (":authority", self.host), (":path", path)]
        return self.encoder.encode(fields + list(extra))

    def request(self, stream, path, end_stream=True):
        frame = HeadersFrame(stream, self.block(path))
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame.serialize()

    def frames(self, seconds):
        """Frames that arrive within `seconds`, until the connection ends."""
        found = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while len(self.buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buffer[9:9 + length]))
                self.buffer = self.buffer[9 + length:]
                found.append(frame)
                if isinstance(frame, GoAwayFrame):
                    return found
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (ConnectionError, ssl.SSLError):
                break
            if not data:
                break
            self.buffer += data
        return found


def summary(frames, started):
    goaway = next((f for f in frames if isinstance(f, GoAwayFrame)), None)
    return {
        "goaway": goaway.error_code if goaway else None,
        "seconds": round(time.monotonic() - started, 3),
        "responses": sum(1 for f in frames if isinstance(f, HeadersFrame)),
        "resets": sum(1 for f in frames if isinstance(f, RstStreamFrame)),
    }


def rapid_reset(client, count):
    started = time.monotonic()
    batch = b""
    for stream in range(1, 2 * count, 2):
        batch += client.request(stream, "/sleep?0.2") + RstStreamFrame(stream, error_code=8).serialize()
        if len(batch) > 16384:
            if not client.send(batch):
                break
            batch = b""
    client.send(batch)
    return summary(client.frames(5), started)


def continuation_flood(client, count):
    started = time.monotonic()
    first = HeadersFrame(1, client.block("/")[:3])
    client.send(first.serialize())
    empty = ContinuationFrame(1, b"").serialize()
    for _ in range(count // 100):
        if not client.send(empty * 100):
            break
    return summary(client.frames(5), started)


def ping_flood(client, count):
    started = time.monotonic()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    for _ in range(count // 100):
        if not client.send(ping * 100):
            break
    return summary(client.frames(5), started)


def big_header_list(client, size):
    """A list past the limit gets 431; the connection goes on."""
    started = time.monotonic()
    fields = [("x-filler-%d" % n, "v" * 1000) for n in range(size // 1000)]
    block = client.block("/", extra=fields)
    pieces = [block[at:at + 16384] for at in range(0, len(block), 16384)]
    frames = []
    for number, piece in enumerate(pieces):
        frame = HeadersFrame(1, piece) if number == 0 else ContinuationFrame(1, piece)
        if number == 0:
            frame.flags.add("END_STREAM")
        if number == len(pieces) - 1:
            frame.flags.add("END_HEADERS")
        frames.append(frame.serialize())
    client.send(b"".join(frames) + client.request(3, "/pid"))
    frames = client.frames(3)
    statuses = {}
    decoder = Decoder()
    for f in frames:
        if isinstance(f, HeadersFrame):
            statuses[f.stream_id] = dict(decoder.decode(f.data)).get(":status")
    result = summary(frames, started)
    result["statuses"] = statuses
    return result


def reset_waiting(client, streams):
    """Streams that wait for a worker, then are reset: none may run."""
    started = time.monotonic()
    client.send(b"".join(client.request(2 * n + 1, "/sleep?1") for n in range(streams)))
    time.sleep(0.4)
    client.send(b"".join(RstStreamFrame(2 * n + 1, error_code=8).serialize() for n in range(streams)))
    return summary(client.frames(1.5), started)


def trailers(client, _):
    """A body followed by trailers: the trailers are read and dropped, the
    body reaches the app. Trailers with a pseudo-header reset the stream."""
    started = time.monotonic()
    for stream, trailer in ((1, [("x-checksum", "abc")]), (3, [(":path", "/evil")])):
        opening = HeadersFrame(stream, client.block("/upload", method="POST"))
        opening.flags.add("END_HEADERS")
        body = DataFrame(stream, b"hello")
        closing = HeadersFrame(stream, client.encoder.encode(trailer))
        closing.flags.add("END_HEADERS")
        closing.flags.add("END_STREAM")
        client.send(opening.serialize() + body.serialize() + closing.serialize())
    frames = client.frames(2)
    result = summary(frames, started)
    result["bodies"] = {str(f.stream_id): f.data.decode() for f in frames if isinstance(f, DataFrame) and f.data}
    result["reset_streams"] = [f.stream_id for f in frames if isinstance(f, RstStreamFrame)]
    return result


def idle(client, seconds):
    """A connection that opens no stream: when does the front say GOAWAY?"""
    started = time.monotonic()
    return summary(client.frames(seconds), started)


def served_then_idle(client, seconds):
    """One request answered, then nothing: when does the front say GOAWAY?"""
    client.send(client.request(1, "/"))
    started = time.monotonic()
    return summary(client.frames(seconds), started)


def zero_window(client, streams):
    """Streams whose window never opens: their responses wait in the
    front's temp files, not its memory, and the workers are free."""
    started = time.monotonic()
    for n in range(streams):
        client.send(client.request(2 * n + 1, "/bytes?%d" % (4 << 20)))
    frames = client.frames(3)
    result = summary(frames, started)
    result["data_bytes"] = sum(len(f.data) for f in frames if isinstance(f, DataFrame))
    # Hold the connection (and its streams) while the test looks.
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()
    return None


def not_reading(client, streams):
    """Windows wide open, then the socket is never read: the front's
    buffers fill and its writes block, and the responses must go to temp
    files then, freeing the workers, as for a slow HTTP/1.1 reader."""
    client.send(WindowUpdateFrame(0, window_increment=(1 << 31) - 1 - 65535).serialize())
    for n in range(streams):
        client.send(client.request(2 * n + 1, "/bytes?%d" % (4 << 20)))
    sys.stdout.write(json.dumps({"sent": streams}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()
    return None


SCENARIOS = {
    "rapid_reset": (rapid_reset, {}),
    "continuation_flood": (continuation_flood, {}),
    "ping_flood": (ping_flood, {}),
    "big_header_list": (big_header_list, {}),
    "zero_window": (zero_window, {SettingsFrame.INITIAL_WINDOW_SIZE: 0}),
    "not_reading": (not_reading, {SettingsFrame.INITIAL_WINDOW_SIZE: (1 << 31) - 1}),
    "reset_waiting": (reset_waiting, {}),
    "trailers": (trailers, {}),
    "idle": (idle, {}),
    "served_then_idle": (served_then_idle, {}),
}

if __name__ == "__main__":
    name, host, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    scenario, settings = SCENARIOS[name]
    outcome = scenario(Client(host, port, settings), arg)
    if outcome is not None:
        print(json.dumps(outcome))
