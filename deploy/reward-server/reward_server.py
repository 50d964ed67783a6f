#!/usr/bin/env python3
"""reward_server.py: an example remote reward server for chunkgrpo (standard library only).

The worker's remote reward client (worker/rewards/remote.h) sends batches of generated images
here and trains on, or logs, the scores. Two toy rewards are built in; to serve your own model
(HPSv3, PickScore, a CLIP score), add a function `f(image, prompt) -> float` to REWARDS, where
image is an Image(width, height, rgb) with rgb the 8-bit R, G, B bytes row by row. The name
"default" (what the trainer sends unless its config sets remote_reward) means DEFAULT_REWARD.
Run it with `python3 deploy/reward-server/reward_server.py [flags]` (any python3 >= 3.9).

Protocol, JSON over HTTP (every answer is application/json with a Content-Length):
  GET  /v1/health -> 200 {"status": "ok", "rewards": ["colourful", "contrast"]}
  POST /v1/score  {"request_id": str, "reward": str,
                   "items": [{"id": str, "prompt": str, "image_png_b64": str}, ...]}
              -> 200 {"request_id": str, "results": [{"id", "score"} or {"id", "error"}, ...]}
One result per item, in the items' order. An item whose base64 or PNG cannot be decoded gets
{"id", "error"}; the others are still scored. Scores are rounded to 6 decimals. A request-level
error answers {"error": {"message": ...}} with 400 (bad JSON or fields, unknown reward), 404
(unknown path), 405 (wrong method), 411 (no Content-Length) or 413 (body over --max-body).
PNGs: 8-bit grey, grey+alpha, RGB or RGBA, non-interlaced; alpha is dropped.

Flags:
  --host HOST          address to bind (default 127.0.0.1)
  --port PORT          port (default 8600; 0 picks a free one). Once bound, the server prints
                       one line "listening on http://HOST:PORT" to stdout.
  --max-body BYTES     largest request body accepted (default 67108864)
  --verbose            log every request to stderr
  --token-file FILE    require "Authorization: Bearer TOKEN" on /v1/score, TOKEN the file's
                       first line (the worker sends $CHUNKGRPO_REMOTE_TOKEN); 401 otherwise
  --log FILE           append one JSON line per POST /v1/score whose body is a JSON object:
                       {"request_id", "reward", "status", "items", "scores": {id: score}}, the
                       status sent and the scores computed (before any --bad-response change;
                       {} when answered 400 or 503)
Fault injection, to try a client's retries and error handling:
  --fail-first N       the first N valid score requests answer 503 "warming up (injected)"
  --item-error-every K items at positions K, 2K, ... (from 1) of each request get an error
  --delay SECONDS      sleep this long before answering each POST /v1/score
  --bad-response MODE  break each 200 answer: missing-score (the first result has neither score
                       nor error), wrong-id (the first result's id is "nonexistent"),
                       wrong-request-id (request_id "other"), not-json (a text/plain body)
SIGTERM and SIGINT stop the server cleanly (exit status 0).
"""
import argparse
import base64
import hmac
import json
import math
import signal
import struct
import sys
import threading
import time
import zlib
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Image = namedtuple("Image", "width height rgb")
MAX_PIXELS = 4096 * 4096
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


# ---- PNG decoding ----

def _read_chunks(data):
    """Yields (type, payload) of each chunk up to IEND; raises on a truncated file."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos = 8
    while True:
        if pos + 12 > len(data):
            raise ValueError("truncated PNG")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            raise ValueError("truncated PNG")
        yield ctype, data[pos + 8:pos + 8 + length]
        if ctype == b"IEND":
            return
        pos += 12 + length


def _parse_ihdr(payload):
    if len(payload) != 13:
        raise ValueError("bad IHDR chunk")
    width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", payload)
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise ValueError(f"image size {width}x{height} not supported")
    if depth != 8:
        raise ValueError(f"bit depth {depth} not supported")
    if ctype not in CHANNELS:
        raise ValueError(f"colour type {ctype} not supported")
    if comp != 0 or filt != 0:
        raise ValueError("unknown compression or filter method")
    if interlace != 0:
        raise ValueError("interlaced PNG not supported")
    return width, height, CHANNELS[ctype]


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw, height, stride, bpp):
    """Reverses the per-row filters (None, Sub, Up, Average, Paeth) of raw."""
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif ftype == 4:
            for i in range(stride):
                left, upleft = (line[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
                line[i] = (line[i] + _paeth(left, prev[i], upleft)) & 255
        elif ftype != 0:
            raise ValueError(f"bad filter type {ftype}")
        out += line
        prev = line
    return out


def decode_png(data):
    """Decodes a PNG file into an Image; raises ValueError on what it cannot read."""
    header, idat = None, []
    for ctype, payload in _read_chunks(data):
        if header is None and ctype != b"IHDR":
            raise ValueError("IHDR is not the first chunk")
        if ctype == b"IHDR":
            header = _parse_ihdr(payload)
        elif ctype == b"IDAT":
            idat.append(payload)
    width, height, channels = header
    stride = width * channels
    expected = height * (stride + 1)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise ValueError(f"corrupt image data: {e}") from None
    if len(raw) != expected:
        raise ValueError(f"image data is {len(raw)} bytes, expected {expected}")
    pixels = _unfilter(raw, height, stride, channels)
    rgb = bytearray(width * height * 3)
    for c in range(3):
        source = c if channels >= 3 else 0  # grey is replicated to R, G and B
        rgb[c::3] = pixels[source::channels]
    return Image(width, height, bytes(rgb))


# ---- rewards ----

def _std_mean(n, s1, s2):
    """Population (std, mean) from the count, sum and sum of squares of integers."""
    return math.sqrt(max(n * s2 - s1 * s1, 0)) / n, s1 / n


def colourful(image, prompt):
    """Colourfulness M of Hasler & Suesstrunk, "Measuring colourfulness in natural images",
    Proc. SPIE 5007, Human Vision and Electronic Imaging VIII (2003); returns min(1, M / 100).
    Integer sums of rg = R - G and 2 yb = R + G - 2B keep it exact until the last step."""
    r, g, b = image.rgb[0::3], image.rgb[1::3], image.rgb[2::3]
    n = len(r)
    rg = [x - y for x, y in zip(r, g)]
    yb2 = [x + y - 2 * z for x, y, z in zip(r, g, b)]
    std_rg, mean_rg = _std_mean(n, sum(rg), sum(v * v for v in rg))
    std_yb2, mean_yb2 = _std_mean(n, sum(yb2), sum(v * v for v in yb2))
    m = math.hypot(std_rg, std_yb2 / 2) + 0.3 * math.hypot(mean_rg, mean_yb2 / 2)
    return min(1.0, m / 100)


def contrast(image, prompt):
    """Population std of the luma Y = 0.299 R + 0.587 G + 0.114 B, over 127.5, capped at 1."""
    y = [299 * r + 587 * g + 114 * b
         for r, g, b in zip(image.rgb[0::3], image.rgb[1::3], image.rgb[2::3])]
    std, _ = _std_mean(len(y), sum(y), sum(v * v for v in y))
    return min(1.0, std / 1000 / 127.5)


REWARDS = {"colourful": colourful, "contrast": contrast}
DEFAULT_REWARD = "colourful"  # what "default" (the trainer's remote_reward default) names


# ---- the HTTP server ----

class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def resolve(reward):
    """The key of REWARDS that the reward name sent stands for."""
    return DEFAULT_REWARD if reward == "default" else reward


def score_item(item, position, reward_fn, opts):
    """The result of one item: {"id", "score"} or {"id", "error"}."""
    k = opts.item_error_every
    if k > 0 and position % k == 0:
        return {"id": item["id"], "error": "injected item failure"}
    try:
        png = base64.b64decode(item["image_png_b64"], validate=True)
        image = decode_png(png)
    except ValueError as e:  # binascii.Error is a ValueError too
        return {"id": item["id"], "error": f"cannot decode image: {e}"}
    return {"id": item["id"], "score": round(reward_fn(image, item.get("prompt")), 6)}


def parse_json_object(body):
    try:
        req = json.loads(body)
    except ValueError:  # UnicodeDecodeError too
        raise RequestError(400, "body is not JSON") from None
    if not isinstance(req, dict):
        raise RequestError(400, "body is not a JSON object")
    return req


def check_score_request(req):
    """Raises RequestError (400) unless req is a well-formed /v1/score request."""
    for field, kind in (("request_id", str), ("reward", str), ("items", list)):
        if not isinstance(req.get(field), kind):
            raise RequestError(400, f"missing or ill-typed field '{field}'")
    if resolve(req["reward"]) not in REWARDS:
        raise RequestError(400, f"unknown reward '{req['reward']}' (known: "
                           + ", ".join(sorted(REWARDS)) + ")")
    for i, item in enumerate(req["items"]):
        if not isinstance(item, dict) or not all(
                isinstance(item.get(f), str) for f in ("id", "image_png_b64")):
            raise RequestError(400, f"items[{i}] needs string fields 'id' and 'image_png_b64'")


def break_answer(answer, mode):
    """Applies --bad-response MODE (other than not-json) to a 200 answer."""
    results = answer["results"]
    if mode == "missing-score" and results:
        results[0] = {"id": results[0]["id"]}
    elif mode == "wrong-id" and results:
        results[0]["id"] = "nonexistent"
    elif mode == "wrong-request-id":
        answer["request_id"] = "other"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chunkgrpo-reward-server/1"
    ROUTES = {"/v1/health": "GET", "/v1/score": "POST"}

    def send_body(self, status, body, ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj, headers=()):
        self.send_body(status, json.dumps(obj).encode(), headers=headers)

    def send_error(self, code, message=None, explain=None):
        """Also answers the errors http.server finds itself (a bad request line...) in JSON."""
        self.close_connection = True
        self.send_json(code, {"error": {"message": message or self.responses[code][0]}})

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            super().log_message(fmt, *args)

    def route(self):
        """Answers 404 or 405 and returns False unless the method fits the path."""
        path = self.path.split("?")[0]
        want = self.ROUTES.get(path)
        if want is None:
            self.send_error(404, f"no such path: {path}")
        elif want != self.command:
            self.close_connection = True
            self.send_json(405, {"error": {"message": f"{path} only answers {want}"}},
                           headers=[("Allow", want)])
        return want == self.command

    def do_GET(self):
        if self.route():
            self.send_json(200, {"status": "ok", "rewards": sorted(REWARDS)})

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length required")
        if not length.isdecimal():
            raise RequestError(400, "bad Content-Length")
        if int(length) > self.server.opts.max_body:
            raise RequestError(413, f"body over {self.server.opts.max_body} bytes")
        return self.rfile.read(int(length))

    def authorized(self):
        """With --token-file, a score request must carry "Authorization: Bearer TOKEN"."""
        token = self.server.token
        sent = self.headers.get("Authorization", "")
        return token is None or hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

    def do_POST(self):
        if not self.route():
            return
        opts, req = self.server.opts, None
        try:
            if not self.authorized():
                raise RequestError(401, "missing or wrong bearer token")
            body = self.read_body()
            time.sleep(opts.delay)
            req = parse_json_object(body)
            check_score_request(req)
        except RequestError as e:
            if req is not None:
                self.server.log_request_line(req, e.status, [])
            self.send_error(e.status, str(e))
            return
        if self.server.take_injected_failure():
            self.server.log_request_line(req, 503, [])
            self.send_json(503, {"error": {"message": "warming up (injected)"}})
            return
        reward_fn = REWARDS[resolve(req["reward"])]
        results = [score_item(item, i + 1, reward_fn, opts)
                   for i, item in enumerate(req["items"])]
        self.server.log_request_line(req, 200, results)
        if opts.bad_response == "not-json":
            self.send_body(200, b"this is not json", ctype="text/plain")
            return
        answer = {"request_id": req["request_id"], "results": results}
        break_answer(answer, opts.bad_response)
        self.send_json(200, answer)


class RewardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, opts):
        super().__init__((opts.host, opts.port), Handler)
        self.opts = opts
        self.lock = threading.Lock()
        self.failures_left = opts.fail_first
        self.log_file = open(opts.log, "a", encoding="utf-8") if opts.log else None
        self.token = None
        if opts.token_file:
            with open(opts.token_file, encoding="utf-8") as f:
                self.token = f.read().strip()

    def handle_error(self, request, client_address):
        """A client that hung up (it timed out, say) is no error of the server's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def take_injected_failure(self):
        """True for the first --fail-first N score requests, counted across threads."""
        with self.lock:
            if self.failures_left <= 0:
                return False
            self.failures_left -= 1
            return True

    def log_request_line(self, req, status, results):
        """Appends the --log line of a score request req answered with status."""
        if self.log_file is None:
            return
        items = req.get("items")
        line = json.dumps({"request_id": req.get("request_id"), "reward": req.get("reward"),
                           "status": status, "items": len(items) if isinstance(items, list) else 0,
                           "scores": {r["id"]: r["score"] for r in results if "score" in r}})
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()


def parse_args(argv):
    p = argparse.ArgumentParser(description="Example remote reward server for chunkgrpo.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8600)
    p.add_argument("--max-body", type=int, default=64 * 1024 * 1024, metavar="BYTES")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--log", metavar="FILE")
    p.add_argument("--token-file", metavar="FILE")
    p.add_argument("--fail-first", type=int, default=0, metavar="N")
    p.add_argument("--item-error-every", type=int, default=0, metavar="K")
    p.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--bad-response", metavar="MODE",
                   choices=["missing-score", "wrong-id", "wrong-request-id", "not-json"])
    return p.parse_args(argv)


def main(argv=None):
    opts = parse_args(argv)
    server = RewardServer(opts)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.default_int_handler)  # raises KeyboardInterrupt
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
