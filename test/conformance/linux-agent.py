# The Linux side of the conformance suite: a small socket agent run inside the lab's namespace.
# It reads one JSON command per line on stdin and writes one JSON event per line on stdout, so the
# same case code can drive the kernel's TCP and Chimney's through one interface (harness.ts).
import errno
import json
import socket
import struct
import sys
import threading

IP = sys.argv[1]
FAMILY = socket.AF_INET6 if ":" in IP else socket.AF_INET
out_lock = threading.Lock()
conns = {}
gates = {}
listeners = {}
next_id = [0]


def emit(**ev):
    with out_lock:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()


def err_name(e):
    return errno.errorcode.get(e.errno or 0, str(e))


def setup(s, o):
    if o.get("rcvBuf"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, o["rcvBuf"])
    ka = o.get("keepalive")
    if ka:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, ka["idleS"])
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, ka["intvlS"])
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, ka["cnt"])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def register(s, o):
    cid = next_id[0] = next_id[0] + 1
    conns[cid] = s
    gate = threading.Event()
    if o.get("read", True):
        gate.set()
    gates[cid] = gate

    def reader():
        total = 0
        try:
            while True:
                gate.wait()
                d = s.recv(65536)
                if not d:
                    emit(ev="eof", id=cid, bytes=total)
                    return
                total += len(d)
                emit(ev="data", id=cid, bytes=total)
        except OSError as e:
            emit(ev="error", id=cid, code=err_name(e))

    threading.Thread(target=reader, daemon=True).start()
    return cid


def listen(c):
    o = c.get("opts", {})
    s = socket.socket(FAMILY, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    setup(s, o)
    s.bind((IP, c["port"]))
    s.listen(16)
    listeners[c["port"]] = s

    def acceptor():
        while True:
            try:
                a, _ = s.accept()
            except OSError:
                return
            cid = register(a, o)
            emit(ev="accepted", id=cid, port=c["port"])

    threading.Thread(target=acceptor, daemon=True).start()
    emit(ev="listening", port=c["port"])


def connect(c):
    o = c.get("opts", {})
    s = socket.socket(FAMILY, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    setup(s, o)
    s.bind((IP, c["lport"]))

    def run():
        try:
            s.connect((c["ip"], c["port"]))
        except OSError as e:
            emit(ev="error", id=0, code=err_name(e))
            return
        cid = register(s, o)
        emit(ev="connected", id=cid)

    threading.Thread(target=run, daemon=True).start()


def write(c):
    s = conns[c["id"]]

    def run():
        try:
            s.sendall(b"x" * c["n"])
        except OSError as e:
            emit(ev="error", id=c["id"], code=err_name(e))

    threading.Thread(target=run, daemon=True).start()


for line in sys.stdin:
    c = json.loads(line)
    op = c["op"]
    try:
        if op == "listen":
            listen(c)
        elif op == "unlisten":
            s = listeners.pop(c["port"])
            s.shutdown(socket.SHUT_RDWR)
            s.close()
            emit(ev="unlistened", port=c["port"])
        elif op == "connect":
            connect(c)
        elif op == "write":
            write(c)
        elif op == "shutdown":
            conns[c["id"]].shutdown(socket.SHUT_WR)
        elif op == "close":
            # close() alone leaves the socket open while the reader thread sits in recv().
            s = conns[c["id"]]
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        elif op == "read":
            gates[c["id"]].set()
        elif op == "ping":
            emit(ev="pong")
        elif op == "info":
            # struct tcp_info: tcpi_rto (us) at byte 8, tcpi_rcv_mss at 20, tcpi_unacked at 24,
            # tcpi_snd_cwnd at 80.
            b = conns[c["id"]].getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            (rto,) = struct.unpack_from("I", b, 8)
            (rcv_mss,) = struct.unpack_from("I", b, 20)
            (unacked,) = struct.unpack_from("I", b, 24)
            (cwnd,) = struct.unpack_from("I", b, 80)
            emit(ev="info", id=c["id"], q=c["q"], rtoMs=rto / 1000, cwnd=cwnd, unacked=unacked, rcvMss=rcv_mss)
    except OSError as e:
        emit(ev="error", id=c.get("id", 0), code=err_name(e))
