# HTTP delivery (SLOTS.md section 5): the device GETs a bundle URL and streams it into the installer,
# one chunk in RAM. After an interrupted download the next fetch() resumes with a Range request from
# where the slot stopped. Plain http: the bundle signature, not the transport, is what is trusted (on
# ESP32 the app brings Wi-Fi up first: network.WLAN(network.STA_IF).connect(...)).
#     software_id = fetch("http://192.168.1.10:8000/app-1.4.0.bnd")
import socket

from umeter.ota import bundle
from umeter.ota.install import Installer, head_length
from umeter.ota.verify import Refused

CHUNK = 1024
MAX_HEADER_LINES = 32


def parse_url(url):
    """(host, port, path) of an http:// URL; ValueError for anything else."""
    if not url.startswith("http://"):
        raise ValueError("only http:// URLs are fetched (the bundle is signed; got %r)" % url[:16])
    rest = url[7:]
    slash = rest.find("/")
    hostport, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    host, _, port = hostport.partition(":")
    if not host:
        raise ValueError("no host in %r" % url)
    return host, int(port) if port else 80, path


def _read_exact(s, n):
    out = bytearray()
    while len(out) < n:
        got = s.read(n - len(out))
        if not got:
            raise OSError("connection closed after %d of %d bytes" % (len(out), n))
        out += got
    return bytes(out)


def _get(host, port, path, start, timeout_s):
    """An open socket positioned at the body, and the status code."""
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(timeout_s)
        s.connect(addr)
        req = "GET %s HTTP/1.0\r\nHost: %s\r\n" % (path, host)
        if start:
            req += "Range: bytes=%d-\r\n" % start
        s.write((req + "\r\n").encode())
        status_line = s.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise OSError("not an HTTP answer: %r" % status_line[:40])
        status = int(parts[1])
        for _ in range(MAX_HEADER_LINES):
            line = s.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
        else:
            raise OSError("too many HTTP header lines")
        return s, status
    except BaseException:
        s.close()
        raise


def fetch(url, installer=None, timeout_s=10, chunk=CHUNK):
    """Download and install the bundle at `url`; its software id. Refused for a bundle the device does
    not accept; OSError for a broken download (call again: it resumes)."""
    host, port, path = parse_url(url)
    inst = installer or Installer()
    s, status = _get(host, port, path, 0, timeout_s)
    try:
        if status != 200:
            raise OSError("HTTP %d for %s" % (status, url))
        first = _read_exact(s, bundle.HEADER_LEN)
        try:
            total_head = head_length(first)
        except bundle.BundleError as e:
            raise Refused(str(e))
        head = first + _read_exact(s, total_head - bundle.HEADER_LEN)
        at = inst.begin(head)
        pos = at
        if at and at == inst.payload_size():
            s.close()                  # everything arrived before: only finish() is left
            return inst.finish()
        if at:
            s.close()
            s, status = _get(host, port, path, len(head) + at, timeout_s)
            if status == 200:          # the server ignores Range: skip what the slot already has
                skip = len(head) + at
                while skip:
                    got = s.read(min(skip, chunk))
                    if not got:
                        raise OSError("connection closed while skipping")
                    skip -= len(got)
            elif status != 206:
                raise OSError("HTTP %d for the rest of %s" % (status, url))
        buf = bytearray(chunk)
        mv = memoryview(buf)
        while True:
            n = s.readinto(buf)
            if not n:
                break
            pos = inst.write(mv[:n])
    finally:
        s.close()
    if pos < inst.payload_size():  # a broken download, not a bad bundle: the next fetch() resumes
        raise OSError("download of %s stopped at %d of %d payload bytes" % (url, pos, inst.payload_size()))
    return inst.finish()
